"""The localized rate the loop hands a Hebbian stage at every step, observed at the stage's
``train_step``, against the formulas worked out here: ``hebbian_lr * lr(t) / base_lr`` with the SGD
rate's linear warm-up then half cosine, and an update only at every ``hebbian_every``-th global step.
Weak supervision is off (its factor's arithmetic: tests/policies/test_learning_mode.py)."""

from __future__ import annotations

import math

import pytest

import llcompile
from llcompile.backends.torch.backend import HebbianTorchStage
from llcompile.train import train
from tests.train.test_training import _config

HEBBIAN_LR, EVERY = 0.02, 3
EPOCHS, BATCH, LIMIT, WARMUP_EPOCHS, BASE_LR = 3, 32, 256, 0.5, 0.05


def sgd_rate(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return BASE_LR * (step + 1) / warmup
    return 0.5 * BASE_LR * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_the_rate_follows_the_schedule_and_the_warmup(zoo_file, tmp_path, monkeypatch):
    program = llcompile.transform(zoo_file("small_cnn", input_shape=(1, 8, 8)), "local-sgd", start_epoch=1,
                                  ramp_epochs=1, max_prefix=1, hebbian_lr=HEBBIAN_LR, hebbian_every=EVERY,
                                  weak_supervision="none").save(tmp_path / "program")
    handed: list[tuple[float, bool]] = []
    step_of_stage = HebbianTorchStage.train_step

    def observed(self, x, labels, lr, update=True):
        handed.append((lr, update))
        return step_of_stage(self, x, labels, lr, update=update)

    monkeypatch.setattr(HebbianTorchStage, "train_step", observed)
    config = _config(epochs=EPOCHS, batch_size=BATCH, lr=BASE_LR, warmup_epochs=WARMUP_EPOCHS, data_limit=LIMIT)
    history = train(program, config, tmp_path / "run", show_progress=False).history
    assert [record["prefix"] for record in history] == [1] * EPOCHS

    steps_per_epoch = len(handed) // EPOCHS
    assert steps_per_epoch * EPOCHS == len(handed) and steps_per_epoch > 2 * EVERY
    total, warmup = EPOCHS * steps_per_epoch, math.ceil(WARMUP_EPOCHS * steps_per_epoch)
    expected = [(HEBBIAN_LR * sgd_rate(t, total, warmup) / BASE_LR, t % EVERY == 0)
                for t in range(total)]
    assert [update for _, update in handed] == [update for _, update in expected]
    assert [rate for rate, _ in handed] == [pytest.approx(rate, rel=1e-12) for rate, _ in expected]

