"""A Ctrl-C at any moment of a run, then --resume: exactly the uninterrupted run.

The interrupt is the flag Ctrl-C sets (``DeferredInterrupt``), raised at a chosen point instead of
whenever a signal happens to arrive: every step of an epoch, and every moment between the last
step of one epoch and the first of the next (evaluation, the boundary decision, the metrics, the
checkpoint, the boundaries moving), where the adaptive policy's decision takes effect.
"""

import pytest

from llcompile.data import load_dataset
from llcompile.train import train
from llcompile.train.checkpoint import load_checkpoint
from llcompile.train.interrupt import DeferredInterrupt
from llcompile.train.loop import SingleProcess, TrainingInterrupted, train_loader
from llcompile.train.transition import ProgramController
from tests.train.test_training import _assert_same_run, _config

# 200 digits: 7 steps an epoch; after epoch 1 the adaptive policy merges a boundary (checked below)
CONFIG = _config(epochs=2, batch_size=32, data_limit=200, threads=1)
LAST_STEP = len(train_loader(load_dataset("digits", (1, 8, 8), 10, CONFIG.data_limit), CONFIG, epoch=0)) - 1


class InterruptibleRun(SingleProcess):
    """One process whose Ctrl-C flag the test raises."""

    def __init__(self):
        self.ctrl_c = DeferredInterrupt(install=False)

    def interrupt(self) -> DeferredInterrupt:
        return self.ctrl_c


def _step_of(epoch, step, stage_index=1):
    """During ``train_stage`` of 0-based ``epoch`` and ``step`` (its arguments: work, stage, stage index, ...,
    step)."""
    return "train_stage", lambda call, *args: args[2] == stage_index and (args[0].epoch, args[-1]) == (epoch, step)


# where the flag is raised (a name in llcompile.train.loop or a ProgramController method, and whether
# a call matches), and where the run stops: (0-based epoch, step not yet taken)
POINTS = {
    "before epoch 1's first step": (ProgramController, "begin_epoch", lambda call, self, epoch: epoch == 1, (0, 0)),
    "epoch 1, step 3": (None, *_step_of(0, 2), (0, 3)),
    "epoch 1's last step": (None, *_step_of(0, LAST_STEP, stage_index=0), (1, 0)),
    "evaluation after epoch 1": (None, "evaluate", lambda call, *args: call == 1, (1, 0)),
    "boundary decision after epoch 1": (ProgramController, "end_epoch", lambda call, self, epoch, *_: epoch == 1,
                                        (1, 0)),
    "writing epoch 1's metrics": (None, "write_metrics", lambda call, run_dir, history: len(history) == 1, (1, 0)),
    "writing epoch 1's checkpoint": (None, "save_checkpoint", lambda call, *args: call == 1, (1, 0)),
    "moving epoch 2's boundaries": (ProgramController, "begin_epoch", lambda call, self, epoch: epoch == 2, (1, 0)),
    "epoch 2, step 3": (None, *_step_of(1, 2), (1, 3)),
}


@pytest.fixture(scope="module")
def reference_run(resnet_dbl_program, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    history = train(resnet_dbl_program, CONFIG, run_dir, show_progress=False).history
    assert "boundary_change" in history[1]  # the points above straddle a boundary move
    return run_dir


@pytest.mark.parametrize("point", POINTS)
def test_resume_after_ctrl_c_at_any_point_matches_an_uninterrupted_run(resnet_dbl_program, reference_run, tmp_path,
                                                                        monkeypatch, point):
    import llcompile.train.loop

    owner, name, matches, stop = POINTS[point]
    owner = owner or llcompile.train.loop
    run = InterruptibleRun()
    original, calls = getattr(owner, name), []

    def interrupted_at_point(*args, **kwargs):
        calls.append(args)
        if matches(len(calls), *args, **kwargs):
            run.ctrl_c.requested = True
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted_at_point)
    with pytest.raises(TrainingInterrupted):
        train(resnet_dbl_program, CONFIG, tmp_path, team=run, show_progress=False)
    monkeypatch.undo()
    _, progress = load_checkpoint(tmp_path / "checkpoint.npz")
    assert (progress["epoch"], progress["step"]) == stop
    train(resnet_dbl_program, CONFIG, tmp_path, resume=True, show_progress=False)
    _assert_same_run(reference_run, tmp_path)
