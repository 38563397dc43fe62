"""The runtime drives the Hebbian stage as the options say: ``--hebbian-every`` updates at every k-th
global step only (a spy on the stage's ``train_step``), and the weak-supervision factor after a rising
loss lowers the rate the stage's update is computed with (both backends, against the numpy definition)."""

from __future__ import annotations

import numpy as np
import pytest

import llcompile
from llcompile.backends.torch.backend import HebbianTorchStage
from llcompile.policies.learning_mode import LearningMode
from llcompile.train import train
from llcompile.train.transition import ProgramController
from tests.backends.dense_hebbian import BACKENDS, dense_program, hebbian_stage
from tests.reference import dense_hebbian_update
from tests.train.test_training import _config


def test_hebbian_every_updates_at_every_kth_global_step(resnet_digits_model, tmp_path, monkeypatch):
    calls = []
    original = HebbianTorchStage.train_step

    def spy(self, x, labels, lr, update=True):
        calls.append(update)
        return original(self, x, labels, lr, update=update)

    monkeypatch.setattr(HebbianTorchStage, "train_step", spy)
    compiled = llcompile.transform(resnet_digits_model, "local-sgd", start_epoch=2, ramp_epochs=1, max_prefix=2,
                                   hebbian_lr=0.05, hebbian_every=3)
    assert compiled.options["hebbian_every"] == 3
    program = compiled.save(tmp_path / "program")
    history = train(program, _config(epochs=2, data_limit=640), tmp_path / "run", show_progress=False).history
    steps = len(calls)  # epoch 2 only: epoch 1 has no prefix
    assert steps > 6 and history[1]["prefix"] == 2
    assert calls == [step % 3 == 0 for step in range(steps, 2 * steps)]  # global steps of epoch 2
    localized = [layer.name for layer in llcompile.analyze(llcompile.load(resnet_digits_model)).layers
                 if layer.segment < 2]
    assert all(history[1]["update_norms"][name] > 0 for name in localized)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rising_loss_lowers_the_rate_of_the_hebbian_update(backend, tmp_path):
    dim, filters, batch, hebbian_lr, base_lr = 5, 4, 16, 0.2, 0.1
    program = dense_program(tmp_path, dim, filters, hebbian_activation="pre", hebbian_lr=hebbian_lr, lr_decay=0.5)
    controller = ProgramController(program, LearningMode.from_options(program.options), None)
    x = np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)

    def new_weight(losses: list[float]) -> np.ndarray:
        """The weight after one step of a fresh Hebbian stage, at the rate the runtime passes after these epochs."""
        controller.end_epoch(len(losses), [{}] * len(losses), losses, {}, [base_lr] * len(losses))
        stage, to_input = hebbian_stage(backend, program)
        stage.train_step(to_input(x), to_input(np.zeros(batch, np.int64)), controller.hebbian_lr(base_lr, base_lr))
        return stage.state()["w"]

    w = hebbian_stage(backend, program)[0].state()["w"]
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    at = lambda rate: dense_hebbian_update(x, y, w, rate, decay=1.0, renormalize=False)  # noqa: E731
    np.testing.assert_allclose(new_weight([1.0]), at(hebbian_lr), rtol=1e-5, atol=1e-6)  # one loss: factor 1
    np.testing.assert_allclose(new_weight([1.0, 1.2]), at(0.5 * hebbian_lr), rtol=1e-5, atol=1e-6)  # rose: halved
    np.testing.assert_allclose(new_weight([1.0, 1.2, 1.3]), at(0.25 * hebbian_lr), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_weight([1.0, 1.2, 1.3, 1.1]), at(0.5 * hebbian_lr), rtol=1e-5, atol=1e-6)
    assert not np.allclose(at(0.5 * hebbian_lr), at(hebbian_lr), atol=1e-4)  # the rate is resolved
