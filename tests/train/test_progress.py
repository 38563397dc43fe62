"""What a run shows while it runs: stderr only (stdout stays the command's result), a line per epoch
naming what moved, and periodic lines within an epoch when no bar can be drawn."""

import io
import json
import subprocess
import sys

from llcompile.train.progress import EpochProgress, print_epoch

RECORD = {"epoch": 3, "prefix": 2, "train_loss": 0.5, "train_acc": 0.8, "test_acc": 0.75, "epoch_time_s": 1.0,
          "images_per_s": 100.0, "peak_memory_mb": 10.0,
          "stages": {"block1": {"loss": 0.6, "acc": 0.7}, "block2": {"loss": 0.5, "acc": 0.8}}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_without_a_terminal_a_line_every_interval():
    stream, clock = io.StringIO(), Clock()  # a StringIO is no terminal: no bar
    progress = EpochProgress(2, 5, steps=10, start_step=0, enabled=True, stream=stream, interval_s=30, clock=clock)
    for step, now in enumerate([10, 29, 31, 40, 61.5]):
        clock.now = now
        progress.step(step, loss=1.0, acc=0.5, images_per_s=64, lr=0.1)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "epoch 2/5 step 3/10: loss 1.000 acc 0.500 64 img/s lr 0.1",
        "epoch 2/5 step 5/10: loss 1.000 acc 0.500 64 img/s lr 0.1",
    ]


def test_quiet_shows_nothing():
    stream, clock = io.StringIO(), Clock()
    progress = EpochProgress(1, 1, steps=3, start_step=0, enabled=False, stream=stream, interval_s=0, clock=clock)
    for step in range(3):
        clock.now += 1
        progress.step(step, loss=1.0, acc=0.5, images_per_s=64, lr=0.1)
    progress.close()
    assert stream.getvalue() == ""


def test_the_epoch_line_names_what_moved_and_why():
    record = {**RECORD,
              "transition": {"from": 0, "to": 2, "reason": "linear schedule"},
              "boundary_change": {"from": ["a", "b"], "to": ["b"], "reason": "adaptive: merged at a: no gain"}}
    stream = io.StringIO()
    print_epoch(record, stream)
    line, = stream.getvalue().splitlines()
    assert line.startswith("epoch 3  hebbian prefix 2: train loss 0.5000")
    assert line.endswith("; Hebbian prefix 0 -> 2 (linear schedule); blocks 3 -> 2 (adaptive: merged at a: no gain)")
    stream = io.StringIO()
    print_epoch(RECORD, stream)
    assert ";" not in stream.getvalue()  # nothing moved, nothing said


def test_json_alone_on_stdout_and_epoch_lines_on_stderr_without_a_terminal(digits_programs, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llcompile", "train", str(digits_programs["dbl"]), "--data", "digits", "--epochs",
         "2", "--batch-size", "64", "--threads", "1", "--run-dir", str(tmp_path / "run"), "--format", "json"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # nothing else on stdout
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1", "epoch 2"]
    assert f"test acc {summary['epochs'][-1]['test_acc']:.4f}" in epoch_lines[-1]
