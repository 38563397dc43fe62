"""--warmup-epochs in a run: the rate every step of every stage trains with, on both backends and from the CLI."""

import json

import pytest
from click.testing import CliRunner

import llcompile
import llcompile.train.loop as loop
from llcompile.cli.commands import cli
from llcompile.train import TrainConfig, train


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_every_step_trains_at_the_warmed_up_rate(digits_programs, tmp_path, backend, monkeypatch):
    rates = []

    def recording(work, stage, stage_index, activation, labels, lr, step):
        rates.append((stage_index, lr))
        return train_stage(work, stage, stage_index, activation, labels, lr, step)

    train_stage = loop.train_stage
    monkeypatch.setattr(loop, "train_stage", recording)
    # 1437 digits: 3 batches of 512 an epoch (the last partial), 3 epochs; warm-up over 1.5 epochs: ceil(4.5) = 5 steps
    config = TrainConfig(data="digits", epochs=3, batch_size=512, lr=0.2, lr_schedule="constant", seed=0,
                         warmup_epochs=1.5, backend=backend)
    result = train(digits_programs["dbl"], config, tmp_path / "run", show_progress=False)
    stages = len(json.loads((digits_programs["dbl"] / "program.json").read_text())["stages"])
    expected = [0.2 * (s + 1) / 5 for s in range(5)] + [0.2] * 4
    assert [lr for _, lr in rates] == pytest.approx([lr for lr in expected for _ in range(stages)])
    assert [record["lr"] for record in result.history] == pytest.approx([expected[2], expected[5], expected[8]])


def test_cli_records_the_warmup(digits_programs, tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(digits_programs["bp"]), "--data", "digits", "--epochs", "1",
                                      "--warmup-epochs", "0.5", "--run-dir", str(run_dir), "--quiet",
                                      "--data-limit", "128"])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "run.json").read_text())["config"]["warmup_epochs"] == 0.5
    bad = CliRunner().invoke(cli, ["train", str(digits_programs["bp"]), "--data", "digits", "--warmup-epochs", "-1"])
    assert bad.exit_code == 2


def test_a_run_written_before_the_warmup_setting_resumes(digits_programs, tmp_path):
    config = TrainConfig(data="digits", epochs=1, batch_size=512, seed=0)
    train(digits_programs["bp"], config, tmp_path / "run", show_progress=False)
    run_file = tmp_path / "run" / "run.json"
    record = json.loads(run_file.read_text())
    del record["config"]["warmup_epochs"]  # as an older llcompile wrote it
    run_file.write_text(json.dumps(record))
    result = train(digits_programs["bp"], TrainConfig(data="digits", epochs=2, batch_size=512, seed=0),
                   tmp_path / "run", resume=True, show_progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    with pytest.raises(llcompile.LLCompileError, match="warmup_epochs"):
        train(digits_programs["bp"], TrainConfig(data="digits", epochs=3, batch_size=512, seed=0, warmup_epochs=1),
              tmp_path / "run", resume=True, show_progress=False)
