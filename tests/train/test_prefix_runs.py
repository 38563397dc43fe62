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


# the transition layers' update norms per epoch (l0..l4: the first layer of segments 0..4), given to the
# run in place of the measured ones; the prefix of each epoch; the moves (epoch, from, to). The learning
# rate is constant, so raw and per-unit-rate norms have the same ratios to their peaks.
# Rule: update_threshold 0.5, prefix_step 2.
DYNAMIC_SCRIPTS = {
    # after epoch 2 l0 is at 0.7 of its peak, still learning: no move although start_epoch is 2;
    # after epoch 3 l0 is at 0.2 (settled), l1 at 0.6 (above half its peak: still learning)
    "settling late": ([[1.0] * 5, [0.7] * 5, [0.2, 0.6, 0.6, 0.6, 0.6], [0.1] * 5], [0, 0, 0, 1], [(4, 0, 1)]),
    # after epoch 2 every layer is at 0.1 of its peak: two segments (prefix_step), then two more
    "settling early": ([[1.0] * 5, [0.1] * 5, [0.05] * 5, [0.02] * 5], [0, 0, 2, 4], [(3, 0, 2), (4, 2, 4)]),
}


@pytest.mark.parametrize("script", DYNAMIC_SCRIPTS)
def test_dynamic_mode_moves_on_the_update_norm(resnet_digits_model, tmp_path, monkeypatch, script):
    """The same program and options, two sequences of update norms, two prefix trajectories (worked out
    by hand): the prefix follows the norms, which no schedule (a function of the epoch) can do."""
    import llcompile.train.loop as loop

    norms_by_epoch, expected, expected_moves = DYNAMIC_SCRIPTS[script]
    segments = llcompile.analyze(llcompile.load(resnet_digits_model)).segments
    transition_layers = [segment.layers[0] for segment in segments[:5]]
    measured, epochs_done = loop.update_norms, []

    def scripted(before, after, weights):  # called once at the end of every epoch
        norms = measured(before, after, weights)
        assert set(transition_layers) <= set(norms)
        norms.update(zip(transition_layers, norms_by_epoch[len(epochs_done)]))
        epochs_done.append(1)
        return norms

    monkeypatch.setattr(loop, "update_norms", scripted)
    program = llcompile.transform(resnet_digits_model, "local-sgd", learning_mode="dynamic", start_epoch=2,
                                  update_threshold=0.5, prefix_step=2,
                                  max_prefix=5).save(tmp_path / "program")
    # the norms are given, so a few hundred samples an epoch are enough
    history = train(program, _config(epochs=4, lr_schedule="constant", data_limit=192), tmp_path / "run",
                    show_progress=False).history
    assert [r["prefix"] for r in history] == expected
    assert [r["transition_layer"] for r in history] == [transition_layers[p] for p in expected]
    moves = [(r["epoch"], r["transition"]["from"], r["transition"]["to"]) for r in history if "transition" in r]
    assert moves == expected_moves
    assert all(transition_layers[r["transition"]["from"]] in r["transition"]["reason"] for r in history
               if "transition" in r)


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
