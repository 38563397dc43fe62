"""Training with a Hebbian prefix that moves between epochs: schedule, dynamic rule, resume."""

import subprocess

import pytest

import llcompile
from llcompile.train import train
from llcompile.train.checkpoint import load_checkpoint
from tests.train.test_training import _assert_same_run, _config, _run_cli, _wait_for_progress


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_static_schedule_grows_the_prefix_and_hebbian_updates_train_it(resnet_digits_model, tmp_path, backend):
    program = llcompile.transform(resnet_digits_model, "local-sgd", start_epoch=2, ramp_epochs=2, max_prefix=4,
                                  hebbian_lr=0.05).save(tmp_path / "program")
    result = train(program, _config(backend=backend, epochs=4), tmp_path / "run", show_progress=False)
    history = result.history
    assert [r["prefix"] for r in history] == [0, 2, 4, 4]  # linear ramp over 2 epochs from epoch 2
    assert [r.get("transition", {}).get("to") for r in history] == [None, 2, 4, None]
    assert all(list(r["stages"]) == ["block1"] for r in history)  # the Hebbian stage has no loss
    assert result.test_accuracy > 0.6
    analysis = llcompile.analyze(llcompile.load(resnet_digits_model))
    localized = [layer.name for layer in analysis.layers if layer.segment < 4]
    # localized layers still move (Hebbian updates), at a rate that depends on the localized lr
    assert all(history[-1]["update_norms"][name] > 0 for name in localized)


def test_zero_localized_rate_freezes_the_prefix(resnet_digits_model, tmp_path):
    program = llcompile.transform(resnet_digits_model, "local-sgd", start_epoch=2, ramp_epochs=1, max_prefix=3,
                                  hebbian_lr=0.0).save(tmp_path / "program")
    history = train(program, _config(epochs=3), tmp_path / "run", show_progress=False).history
    analysis = llcompile.analyze(llcompile.load(resnet_digits_model))
    localized = {layer.name for layer in analysis.layers if layer.segment < 3}
    for record in history[1:]:
        assert {n for n, v in record["update_norms"].items() if v == 0} == localized


def test_dynamic_mode_moves_on_the_update_norm(resnet_digits_model, tmp_path):
    # threshold 1: a layer has settled as soon as its norm per unit of learning rate is below its peak,
    # which every later epoch shows here: from then on the transition moves prefix_step (2) segments per epoch
    program = llcompile.transform(resnet_digits_model, "local-sgd", learning_mode="dynamic", start_epoch=2,
                                  update_threshold=1.0, prefix_step=2, max_prefix=5).save(tmp_path / "program")
    history = train(program, _config(epochs=5), tmp_path / "run", show_progress=False).history
    assert [r["prefix"] for r in history] == [0, 0, 2, 4, 5]
    assert "peak update norm per unit lr" in history[2]["transition"]["reason"]
    assert history[2]["transition_layer"] != history[1]["transition_layer"]


def test_dbl_hebbian_trains(resnet_digits_model, tmp_path):
    program = llcompile.transform(resnet_digits_model, "dbl-hebbian", blocks=2, start_epoch=2, ramp_epochs=1,
                                  max_prefix=2).save(tmp_path / "program")
    result = train(program, _config(epochs=3), tmp_path / "run", show_progress=False)
    assert [r["prefix"] for r in result.history] == [0, 2, 2]
    assert all(list(r["stages"]) == ["block1", "block2"] for r in result.history)
    assert result.test_accuracy > 0.5


def test_resume_across_a_prefix_move_matches_an_uninterrupted_run(resnet_digits_model, tmp_path):
    program = llcompile.transform(resnet_digits_model, "local-sgd", start_epoch=2, ramp_epochs=1, max_prefix=3,
                                  hebbian_lr=0.05).save(tmp_path / "program")
    reference = tmp_path / "reference"
    subprocess.run(_run_cli(program, reference), check=True, timeout=300)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_run_cli(program, interrupted), stderr=subprocess.PIPE, text=True)
    _wait_for_progress(interrupted, proc, min_epochs_done=1)  # inside epoch 2, the first with a prefix
    proc.kill()
    proc.wait(timeout=60)
    resumed = subprocess.run(_run_cli(program, interrupted, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(reference, interrupted)
    history = load_checkpoint(interrupted / "checkpoint.npz")[1]["history"]
    assert [r["prefix"] for r in history] == [0, 3, 3]
