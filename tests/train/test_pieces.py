"""The runtime's small parts: learning-rate schedules, checkpoints, metrics files."""

import json
import math

import numpy as np
import pytest

from llcompile.errors import LLCompileError
from llcompile.train.checkpoint import load_checkpoint, save_checkpoint
from llcompile.train.lr_schedule import learning_rate
from llcompile.train.metrics import write_metrics


def test_schedules():
    assert learning_rate("constant", 0.1, 57, 100) == 0.1
    assert learning_rate("cosine", 0.1, 0, 100) == pytest.approx(0.1)
    assert learning_rate("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert learning_rate("cosine", 0.1, 25, 100) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert [learning_rate("step", 1.0, s, 100) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(LLCompileError, match="unknown lr schedule"):
        learning_rate("warp", 0.1, 0, 10)


def test_warmup_rises_linearly_then_runs_the_schedule_over_the_rest():
    # 12 steps, 4 of warm-up: 0.1 * (s + 1) / 4, then each schedule over the remaining 8 steps
    warmup = [0.025, 0.05, 0.075, 0.1]
    assert [learning_rate("constant", 0.1, s, 12, 4) for s in range(12)] == pytest.approx(warmup + [0.1] * 8)
    cosine = [0.05 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert [learning_rate("cosine", 0.1, s, 12, 4) for s in range(12)] == pytest.approx(warmup + cosine)
    assert [learning_rate("step", 0.1, s, 12, 4) for s in range(12)] == pytest.approx(
        warmup + [0.1] * 4 + [0.01] * 2 + [0.001] * 2)
    assert learning_rate("cosine", 0.1, 7, 12, 0) == learning_rate("cosine", 0.1, 7, 12)
    with pytest.raises(LLCompileError, match="warm-up steps must be >= 0"):
        learning_rate("cosine", 0.1, 0, 12, -1)


def test_checkpoint_round_trip_without_pickle(tmp_path):
    arrays = {"conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "block1/step": np.array(7)}
    progress = {"epoch": 2, "step": 5, "history": [{"epoch": 1, "test_acc": 0.5}]}
    path = tmp_path / "ck.npz"
    save_checkpoint(path, arrays, progress)
    loaded, loaded_progress = load_checkpoint(path)
    assert loaded_progress == progress
    assert set(loaded) == set(arrays)
    np.testing.assert_array_equal(loaded["conv.weight"], arrays["conv.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temp file left behind


def test_checkpoint_with_an_object_array_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(LLCompileError, match="not a readable llcompile checkpoint"):
        load_checkpoint(path)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.ones(3)}, {"epoch": 1})

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": np.zeros(3)}, {"epoch": 2})
    arrays, progress = load_checkpoint(path)
    assert progress == {"epoch": 1} and arrays["w"].tolist() == [1, 1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_metrics_files(tmp_path):
    history = [{"epoch": 1, "test_acc": 0.5, "stages": {"block1": {"loss": 1.0, "acc": 0.4}}},
               {"epoch": 2, "test_acc": 0.6, "stages": {"block1": {"loss": 0.8, "acc": 0.5}}}]
    write_metrics(tmp_path, history)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == history
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,test_acc,stages.block1.loss,stages.block1.acc"
    assert lines[2] == "2,0.6,0.8,0.5"


def test_cli_offers_exactly_the_schedules_the_runtime_knows():
    from llcompile.cli.commands import train as train_command
    from llcompile.train.lr_schedule import SCHEDULES

    options = {param.name: param for param in train_command.params}
    assert tuple(options["lr_schedule"].type.choices) == SCHEDULES
