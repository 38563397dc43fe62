"""`llcompile report`: every format renders and parses, the JSON contract's names, a program directory
as input, --measured, and one-line errors with exit code 2."""

import csv
import io
import json
import sys

import pytest

import llcompile
from llcompile.cli.commands import main

SPECS = ["-s", "dbl:cuts=u1.out", "-s", "local-sgd:prefix=1"]
LABELS = ["bp", "dbl:cuts=u1.out", "local-sgd:prefix=1"]


def run(monkeypatch, capsys, *args):
    """(exit code, stdout, stderr) of ``llcompile ARGS`` run in this process through the real ``main``."""
    monkeypatch.setattr(sys, "argv", ["llcompile", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def user_error(result, *fragments):
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_json_contract(tiny_model, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--batch-size", "2", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert list(report["strategies"]) == LABELS
    assert report["settings"]["batch_size"] == 2 and report["settings"]["onchip_kib"] == 512
    for name, entry in report["strategies"].items():
        assert set(entry["macs"]) >= {"forward", "backward", "hebbian", "aux", "total", "backward_dx", "backward_dw"}
        assert set(entry["memory"]) >= {"params_bytes", "grads_bytes", "optimizer_bytes", "activation_peak_bytes",
                                        "offchip_bytes", "peak_bytes"}
        assert set(entry["vs_bp"]) >= {"macs_total", "activation_peak_bytes", "offchip_bytes", "ideal_speedup"}
        assert len(entry["layers"]) == 3
        for layer in entry["layers"]:
            assert set(layer) >= {"name", "op", "stage", "output_shape", "params", "macs_forward", "macs_backward_dx",
                                  "macs_backward_dw", "macs_hebbian", "element_ops_forward", "element_ops_backward",
                                  "activation_bytes"}
        assert entry["macs"]["total"] == (entry["macs"]["forward"] + entry["macs"]["backward"]
                                          + entry["macs"]["hebbian"] + entry["macs"]["aux"])
    bp, dbl, local = (report["strategies"][n] for n in LABELS)
    # MACs per sample by hand (TINY): u0.conv 4x8x8 outputs x 3x3x3 = 6912, u2.conv 8x4x4 x 4x3x3 = 4608,
    # head.fc 8 x 10 = 80. bp: 3 x forward, less the first layer's dX.
    assert bp["macs"]["total"] == 3 * (6912 + 4608 + 80) - 6912 == 27888
    # dbl cut after the pool: no dX for either block's first layer; the fc head (GAP, 4 -> 10) costs
    # forward + dX + dW = 3 x 40
    assert dbl["macs"]["aux"] == 120 and dbl["macs"]["total"] == 2 * 6912 + 2 * 4608 + 3 * 80 + 120 == 23400
    # local-sgd prefix 1: u0.conv forward + its Hebbian GEMM at every 4th step (the default
    # --hebbian-every 4), u2.conv without dX
    assert local["macs"]["hebbian"] == 6912 / 4
    assert local["macs"]["total"] == 6912 + 6912 / 4 + 2 * 4608 + 3 * 80 == 18096
    assert dbl["vs_bp"]["ideal_speedup"] == pytest.approx(27888 / 23400)
    assert local["vs_bp"]["ideal_speedup"] == pytest.approx(27888 / 18096)
    assert dbl["vs_bp"]["macs_total"] == pytest.approx(23400 / 27888)
    # activations kept, bytes at batch 2 (docs/cost-model.md's rule, counted by hand):
    # bp: u0.conv's input 768/sample, BN's input 1024 + 2x4 floats, ReLU's output 1024, MaxPool's int64
    # indices 512 (its input is ReLU's output, counted once), u2.conv's input 256, ReLU's output 512,
    # Gemm's input 32, the loss's log-probabilities 40 + labels 8 + a 4-byte scalar
    bp_kept = 2 * (768 + 1024 + 1024 + 512 + 256 + 512 + 32 + 40 + 8) + 32 + 4
    # dbl block1: u0.conv, BN, ReLU, MaxPool as in bp, the head's fc input 16 and its loss; block2: u2.conv,
    # ReLU, Gemm, loss
    dbl_kept = [2 * (768 + 1024 + 1024 + 512 + 16 + 40 + 8) + 32 + 4, 2 * (256 + 512 + 32 + 40 + 8) + 4]
    assert bp["memory"]["activation_stage_bytes"] == [bp_kept] == [8388]
    assert dbl["memory"]["activation_stage_bytes"] == dbl_kept == [6820, 1700]
    assert local["stages"][0]["kind"] == "hebbian" and local["memory"]["activation_stage_bytes"] == [0, 1700]
    assert dbl["vs_bp"]["activation_peak_bytes"] == pytest.approx(6820 / 8388)
    assert local["vs_bp"]["activation_peak_bytes"] == pytest.approx(1700 / 8388)


def test_csv_table_markdown_html(tiny_model, tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 * 3 and [r["strategy"] for r in rows[::3]] == LABELS
    assert {r["layer"] for r in rows} == {"u0.conv", "u2.conv", "head.fc"}
    assert int(rows[0]["macs_forward"]) == 6912

    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS)
    assert code == 0, err
    assert "total FLOPs" in out and "FLOPs = 2 x MACs" in out and ": layers" not in out  # the summary by default
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--detail", "layers")
    assert code == 0, err
    assert "local-sgd:prefix=1: stages" in out and "local-sgd:prefix=1: layers" in out

    md = tmp_path / "cost.md"
    code, _, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "markdown", "-o", md)
    assert code == 0, err
    assert md.read_text().startswith("# Cost report") and "](cost.png)" in md.read_text()
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page = tmp_path / "cost.html"
    code, _, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "html", "-o", page,
                       "--detail", "summary")
    assert code == 0, err
    html = page.read_text()
    assert "<img" in html and "data:image/png;base64," in html and "<table>" in html

    user_error(run(monkeypatch, capsys, "report", tiny_model, "--format", "html", "-o", page), "already exists",
               "--force")
    assert run(monkeypatch, capsys, "report", tiny_model, "--format", "html", "-o", page, "--force")[0] == 0


def test_program_directory(tiny_model, tmp_path, monkeypatch, capsys):
    llcompile.transform(tiny_model, "dbl", cuts=["u1.out"]).save(tmp_path / "prog")
    code, out, err = run(monkeypatch, capsys, "report", tmp_path / "prog", "-s", "local-sgd:prefix=1",
                         "--format", "json")
    assert code == 0, err
    from_dir = json.loads(out)
    assert from_dir["source"]["kind"] == "program" and list(from_dir["strategies"]) == ["bp", "dbl", "local-sgd:prefix=1"]
    code, out, _ = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "json")
    from_model = json.loads(out)["strategies"]
    for dir_name, model_name in [("bp", "bp"), ("dbl", "dbl:cuts=u1.out"), ("local-sgd:prefix=1",) * 2]:
        assert from_dir["strategies"][dir_name]["macs"] == from_model[model_name]["macs"]
        assert from_dir["strategies"][dir_name]["memory"] == from_model[model_name]["memory"]


def test_default_prefix_is_half_the_segments(tiny_model, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "-s", "local-sgd", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert "local-sgd:prefix=1" in report["strategies"]  # 3 segments
    assert any("first 1 of 3 segments (half)" in note for note in report["notes"])


def test_measured_run(tiny_model, tmp_path, monkeypatch, capsys):
    from llcompile.backends.base import OptimizerConfig
    from llcompile.train import TrainConfig, train

    config = TrainConfig(data="synthetic:32", epochs=1, batch_size=8, optimizer=OptimizerConfig())
    for strategy, options in [("bp", {}), ("dbl", {"cuts": ["u1.out"]})]:
        llcompile.transform(tiny_model, strategy, **options).save(tmp_path / f"prog-{strategy}")
        train(tmp_path / f"prog-{strategy}", config, tmp_path / f"run-{strategy}", show_progress=False)
    # measured times and memory are not reproducible: give the runs figures to compute from by hand
    # (bp: two epochs, the first slower, the larger peak in the last; dbl: one epoch)
    figures = {"bp": [(100.0, 90.0, 0.5), (400.0, 120.0, 0.625)], "dbl": [(800.0, 60.0, 0.6)]}
    for strategy, epochs in figures.items():
        record = json.loads((tmp_path / f"run-{strategy}" / "metrics.jsonl").read_text().splitlines()[0])
        (tmp_path / f"run-{strategy}" / "metrics.jsonl").write_text("".join(
            json.dumps({**record, "epoch": epoch, "images_per_s": rate, "peak_memory_mb": mb, "test_acc": acc}) + "\n"
            for epoch, (rate, mb, acc) in enumerate(epochs, start=1)))
    # the dbl run's strategy was not asked for: the report costs it, from the run's program options
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8",
                         "--measured", tmp_path / "run-bp", "--measured", tmp_path / "run-dbl", "--format", "json")
    assert code == 0, err
    strategies = json.loads(out)["strategies"]
    assert list(strategies) == ["bp", "dbl:cuts=u1.out"]
    bp, dbl = strategies["bp"]["measured"], strategies["dbl:cuts=u1.out"]["measured"]
    # seconds per step from the last epoch: 8 images / 400 per s; the peak is the largest over the epochs;
    # the accuracy is the last epoch's
    assert bp["epochs"] == 2 and bp["s_per_step"] == pytest.approx(0.02) and dbl["s_per_step"] == pytest.approx(0.01)
    assert bp["peak_memory_bytes"] == 120 * 2**20 and dbl["peak_memory_bytes"] == 60 * 2**20
    assert bp["test_acc"] == 0.625 and dbl["test_acc"] == 0.6
    assert dbl["speedup_vs_bp"] == pytest.approx(2.0) and dbl["s_per_step_vs_bp"] == pytest.approx(0.5)
    assert dbl["peak_memory_vs_bp"] == pytest.approx(0.5)
    # bp trained 2 epochs, dbl 1: their accuracies are not compared
    assert bp["test_acc_vs_bp_points"] == 0 and dbl["test_acc_vs_bp_points"] is None
    # predicted peak at batch 8, by hand: 494 parameters (u0.conv 108, BN 8, u2.conv 288, fc 90), their
    # gradients and SGD momentum, 3 x 494 x 4 bytes; BN running statistics 32; bp's kept activations
    # 8 x 4176 + 36 (the per-sample count of test_json_contract)
    assert bp["predicted_peak_bytes"] == 3 * 494 * 4 + 32 + 8 * 4176 + 36 == 39404
    assert strategies["dbl:cuts=u1.out"]["macs"] == json.loads(run(
        monkeypatch, capsys, "report", tiny_model, "-s", "dbl:cuts=u1.out", "--format", "json")[1])[
        "strategies"]["dbl:cuts=u1.out"]["macs"]

    # the same data and epochs: the accuracy gap in points
    (tmp_path / "run-bp" / "metrics.jsonl").write_text(
        (tmp_path / "run-bp" / "metrics.jsonl").read_text().splitlines()[1] + "\n")
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:cuts=u1.out", "--batch-size", "8",
                         "--measured", tmp_path / "run-dbl", "--measured", tmp_path / "run-bp", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["strategies"]["dbl:cuts=u1.out"]["measured"]["test_acc_vs_bp_points"] == pytest.approx(
        100 * (0.6 - 0.625))
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured",
                         tmp_path / "run-dbl", "--measured", tmp_path / "run-bp")
    assert code == 0, err
    assert "Accuracy against cost" in out
    row = next(line.split() for line in out.splitlines()
               if line.strip().startswith("dbl:cuts=u1.out") and "/cpu" in line)
    assert row[2:7] == ["1", "0.6000", "-2.5", "0.0100", "0.500"]
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured",
                   tmp_path / "run-bp", "--measured", tmp_path / "run-bp"), "bp already has a measured run")
    code, out, _ = run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured",
                       tmp_path / "run-bp")
    assert code == 0 and "Accuracy against cost" in out
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--measured", tmp_path / "run-bp"),
               "trained at batch 8", "--batch-size 8")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured",
                   tmp_path / "prog-bp"), "no run.json")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--measured", tmp_path / "nothing"), "not a directory")


def test_errors_are_one_line(tiny_model, tmp_path, monkeypatch, capsys):
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "nope"), "unknown strategy 'nope'")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:blocks=x"), "blocks must be an integer")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:colour=red"), "takes no option 'colour'")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--blocks", "2"), "--blocks applies to none")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:blocks=9"))
    user_error(run(monkeypatch, capsys, "report", tmp_path / "missing.onnx"), "no such file")
    user_error(run(monkeypatch, capsys, "report", tmp_path), "not a program directory")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--format", "pdf"), "pdf")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-o", tmp_path / "no" / "such" / "dir.json"),
               "no such directory")
