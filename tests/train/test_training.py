"""End-to-end training on built-in data: both backends, bp and dbl, resume, export, bad data."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.data import BatchLoader, load_dataset
from llcompile.train import TrainConfig, train
from llcompile.train.checkpoint import load_checkpoint
from llcompile.util.ort_session import session


def _config(**overrides) -> TrainConfig:
    base = dict(data="digits", epochs=3, batch_size=64, lr=0.05, seed=0)  # threads: the conftest's share
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.parametrize("backend", ["torch", "ort"])
@pytest.mark.parametrize("strategy", ["bp", "dbl"])
def test_training_learns_digits(digits_programs, tmp_path, backend, strategy):
    import resource

    from llcompile.train.memory import current_rss_bytes, release_freed_memory

    release_freed_memory()  # what earlier tests in this process freed goes back: the baseline is what it holds
    resident_before = current_rss_bytes()
    result = train(digits_programs[strategy], _config(backend=backend), tmp_path / "run", show_progress=False)
    max_resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    history = result.history
    assert len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.test_accuracy > 0.6  # chance is 0.1
    names = [stage["name"] for stage in json.loads((digits_programs[strategy] / "program.json").read_text())["stages"]]
    for record in history:
        assert list(record["stages"]) == names
        # the rate counts the 1437 training images of an epoch (none dropped: 1437 = 22 x 64 + 29)
        assert record["images_per_s"] * record["epoch_time_s"] == pytest.approx(1437, rel=1e-9)
        # the peak is this process's resident set in MiB: no less than before training (up to what the
        # allocator may hand back), no more than the most it ever held (what the peak must see:
        # test_peak_memory.py) (the kernel's high-water mark
        # trails /proc/self/statm by a few pages: its per-thread counters are synced lazily)
        assert 0.9 * resident_before <= record["peak_memory_mb"] * 2**20 <= 1.01 * max_resident
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_trained_model_gives_the_reported_accuracy(digits_programs, tmp_path, backend):
    result = train(digits_programs["dbl"], _config(backend=backend, epochs=2), tmp_path / "run", show_progress=False)
    onnx.checker.check_model(onnx.load(result.trained_model), full_check=True)
    correct, total = _onnxruntime_correct(result.trained_model, load_dataset("digits", (1, 8, 8), 10))
    assert correct / total == pytest.approx(result.test_accuracy, abs=1 / total)


def _onnxruntime_correct(trained_model, dataset) -> tuple[int, int]:
    """(correct, total) of ``trained_model.onnx`` run by onnxruntime over the test split: an evaluation
    independent of the backend that trained it."""
    sess = session(onnx.load(trained_model))
    correct = total = 0
    for x, labels in BatchLoader(dataset, "test", 100, seed=0, epoch=0):
        predictions = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1)
        correct += int((predictions == labels).sum())
        total += len(labels)
    return correct, total


def _run_cli(program, run_dir, *extra):
    return [sys.executable, "-m", "llcompile", "train", str(program), "--data", "digits", "--epochs", "3",
            "--batch-size", "32", "--lr", "0.05", "--threads", "1", "--quiet", "--run-dir", str(run_dir), *extra]


def _final_state(run_dir):
    arrays, progress = load_checkpoint(run_dir / "checkpoint.npz")
    return arrays, progress["history"]


def _assert_same_run(a, b):
    arrays_a, history_a = _final_state(a)
    arrays_b, history_b = _final_state(b)
    strip = [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s", "peak_memory_mb")}
             for r in history_a]
    assert strip == [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s", "peak_memory_mb")}
                     for r in history_b]
    assert set(arrays_a) == set(arrays_b)
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


def _wait_for_progress(run_dir, proc, min_epochs_done: int, timeout=120):
    """Wait until the run is inside epoch ``min_epochs_done + 1``."""
    start = time.time()
    while time.time() - start < timeout:
        if (run_dir / "metrics.jsonl").exists():
            done = len((run_dir / "metrics.jsonl").read_text().splitlines())
            if done >= min_epochs_done:
                time.sleep(0.5)  # into the middle of the next epoch
                return
        if proc.poll() is not None:
            pytest.fail(f"run ended early: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("run made no progress")


# a kill mid-epoch and a resume are checked by default across a prefix move and across boundary changes
@pytest.mark.parametrize("how", [pytest.param("kill", marks=pytest.mark.slow), "ctrl-c"])
def test_resume_after_interruption_matches_an_uninterrupted_run(resnet_dbl_program, tmp_path, how):
    program = resnet_dbl_program
    reference = tmp_path / "reference"
    subprocess.run(_run_cli(program, reference), check=True, timeout=300)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_run_cli(program, interrupted), stderr=subprocess.PIPE, text=True)
    _wait_for_progress(interrupted, proc, min_epochs_done=1)
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    proc.wait(timeout=60)
    if how == "ctrl-c":
        assert proc.returncode == 130
        _, progress = load_checkpoint(interrupted / "checkpoint.npz")
        assert progress["epoch"] < 3  # stopped before the end, with a checkpoint of where
    resumed = subprocess.run(_run_cli(program, interrupted, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(reference, interrupted)


def test_resume_refuses_other_settings(digits_programs, tmp_path):
    run_dir = tmp_path / "run"
    train(digits_programs["bp"], _config(epochs=1), run_dir, show_progress=False)
    with pytest.raises(llcompile.LLCompileError, match="lr differ"):
        train(digits_programs["bp"], _config(epochs=2, lr=0.2), run_dir, resume=True, show_progress=False)
    with pytest.raises(llcompile.LLCompileError, match="fewer"):
        train(digits_programs["bp"], _config(epochs=0), run_dir, resume=True, show_progress=False)
    # the default learning rate given explicitly is the same setting
    train(digits_programs["bp"], _config(epochs=1, lr=None), run_dir / "default", show_progress=False)
    train(digits_programs["bp"], _config(epochs=1, lr=0.1), run_dir / "default", resume=True, show_progress=False)
    with pytest.raises(llcompile.LLCompileError, match="already holds a run"):
        train(digits_programs["bp"], _config(epochs=1), run_dir, show_progress=False)


@pytest.mark.parametrize("spec, fragment", [
    ("cifar10:/nonexistent/path", "/nonexistent/path"),
    ("imagenet", "unknown"),
])
def test_bad_data_is_a_one_line_error(digits_programs, tmp_path, spec, fragment):
    result = subprocess.run([sys.executable, "-m", "llcompile", "train", str(digits_programs["bp"]),
                             "--data", spec, "--run-dir", str(tmp_path / "run"), "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the input was checked


def test_data_with_more_classes_than_the_model(tmp_path):
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    model = export("mlp", tmp_path / "mlp5.onnx", input_shape=(1, 8, 8), num_classes=5)
    program = llcompile.transform(model, "bp").save(tmp_path / "bp")
    with pytest.raises(llcompile.LLCompileError, match="10 classes"):
        train(program, _config(epochs=1), tmp_path / "run", show_progress=False)


SHARED_ZIP = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.zip"


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_mnist1d_and_synthetic(tmp_path, backend):
    """The other built-in data: an MLP on mnist1d (signals reshaped to the model's 1x1x40 input), a
    small CNN on synthetic data, each with bp and dbl."""
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    cases = [("mlp", (1, 1, 40), "mnist1d", 0.3), ("small_cnn", (3, 16, 16), "synthetic:1024", 0.5)]
    for name, shape, data, accuracy in cases:
        model = export(name, tmp_path / f"{name}.onnx", input_shape=shape)
        for strategy, options in [("bp", {}), ("dbl", {"blocks": 2})]:
            program = llcompile.transform(model, strategy, **options).save(tmp_path / f"{name}-{strategy}")
            result = train(program, _config(data=data, backend=backend, epochs=3, lr=0.05), program / "run",
                           show_progress=False)
            assert result.test_accuracy > accuracy, (name, strategy, result.test_accuracy)  # chance is 0.1


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason="../shared/data/cifar10-jpeg.zip is not present")
def test_cifar10_zip_smoke(tmp_path):
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    model = export("small_cnn", tmp_path / "small_cnn.onnx")
    program = llcompile.transform(model, "dbl", blocks=2).save(tmp_path / "dbl")
    result = train(program, _config(data=f"cifar10:{SHARED_ZIP}", data_limit=256, epochs=1, batch_size=64),
                   tmp_path / "run", show_progress=False)
    assert len(result.history) == 1
    # the reported accuracy is onnxruntime's on trained_model.onnx over the same 256 test images
    dataset = load_dataset(f"cifar10:{SHARED_ZIP}", (3, 32, 32), 10, limit=256)
    correct, total = _onnxruntime_correct(result.trained_model, dataset)
    assert total == 256 and correct / total == pytest.approx(result.test_accuracy, abs=1 / total)
    # the rate counts the 256 training images (4 batches of 64) over the epoch's time
    record = result.history[0]
    assert record["images_per_s"] * record["epoch_time_s"] == pytest.approx(256, rel=1e-9)
