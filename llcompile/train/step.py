"""One training step of one stage, shared by the sequential loop and the parallel ranks.

torch's RNG is re-seeded from (seed, epoch, step, stage index) before every stage's step, so a
stage sees the same random stream whether the stages before it ran in this process or on
another rank, and a run resumed from any checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from llcompile.backends.base import TrainableStage
from llcompile.errors import TrainingDiverged
from llcompile.train.config import TrainConfig
from llcompile.train.epoch import EpochWork
from llcompile.train.lr_schedule import learning_rate
from llcompile.util.option_names import option_name


def step_lr(config: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of ``step`` of 0-based ``epoch``."""
    return learning_rate(config.lr_schedule, config.base_lr, epoch * steps_per_epoch + step,
                         config.epochs * steps_per_epoch, math.ceil(config.warmup_epochs * steps_per_epoch))


def stage_seed(seed: int, epoch: int, step: int, stage_index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step, stage_index]).generate_state(1)[0])


def train_stage(work: EpochWork, stage: TrainableStage, stage_index: int, activation: Any, labels: Any, lr: float,
                step: int) -> tuple[Any, float, float]:
    """One step of ``stage`` (``work.program``'s stage ``stage_index``) at ``step`` of ``work``'s epoch
    on a batch: the detached output, the loss and the number of correct predictions (NaN and 0 for
    a Hebbian stage, which has no loss and trains at the localized rate, when it updates at all:
    ``work.hebbian``). A block whose aux head warms up trains that head only (``work.held``)."""
    plan = work.program.stages[stage_index]
    torch.manual_seed(stage_seed(work.config.seed, work.epoch, step, stage_index))
    if plan.updates is not None:
        rate, update = work.hebbian(lr, step)
        return stage.train_step(activation, labels, rate, update=update).output, float("nan"), 0
    result = stage.train_step(activation, labels, lr, hold=work.held(stage_index, step))
    if not math.isfinite(result.loss):  # every later step would train on it: stop, and say where
        raise TrainingDiverged(f"training diverged: {plan.name}'s loss is {result.loss} at epoch {work.epoch + 1}, "
                               f"step {step + 1}; lower the learning rate ({option_name('lr')})")
    return result.output, result.loss, result.correct
