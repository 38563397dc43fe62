"""What one epoch trains (``EpochWork``), its running sums, and the ``Team`` protocol through which the
sequential loop (``loop.py``) and the ranks of a parallel run (``parallel/``) share it; ``step.py``
trains one stage of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from llcompile.backends.base import Backend, TrainableStage
from llcompile.data import Dataset
from llcompile.program.program import Program
from llcompile.train.config import TrainConfig
from llcompile.train.ema_heads import AveragedHead, averaged_heads, update_averaged_heads
from llcompile.train.interrupt import DeferredInterrupt
from llcompile.train.transition import ProgramController

T = TypeVar("T")


@dataclass
class EpochSums:
    """Running sums of the epoch in progress (kept in checkpoints taken mid-epoch)."""

    loss: dict[str, float] = field(default_factory=dict)
    correct: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int = 0

    def add(self, stage: str, loss: float, correct: float, batch: int) -> None:
        self.loss[stage] = self.loss.get(stage, 0.0) + loss * batch
        self.correct[stage] = self.correct.get(stage, 0) + correct


@dataclass
class EpochWork:
    """What one epoch trains: the program's stages on the epoch's batches from ``start_step``."""

    program: Program
    stages: list[TrainableStage]
    backend: Backend
    dataset: Dataset
    config: TrainConfig
    controller: ProgramController | None
    epoch: int
    start_step: int
    steps_per_epoch: int
    sums: EpochSums
    averaged: list[AveragedHead] = field(init=False)  # the program's ema heads

    def __post_init__(self) -> None:
        self.averaged = averaged_heads(self.program)

    def after_step(self) -> None:
        """Once every stage has taken the step: the ema heads' averages follow the trained weights."""
        update_averaged_heads(self.averaged, self.stages)

    def hebbian(self, lr: float, step: int) -> tuple[float, bool]:
        """A Hebbian stage's localized rate at SGD rate ``lr``, and whether it updates its weights at
        ``step`` of the epoch (``hebbian_every``); a Hebbian prefix has a controller."""
        return (self.controller.hebbian_lr(lr, self.config.base_lr),
                self.controller.hebbian_updates_at(self.epoch * self.steps_per_epoch + step))

    def held(self, stage_index: int, step: int) -> frozenset[str]:
        """The parameters stage ``stage_index`` leaves unchanged at ``step`` of the epoch: its block's,
        while its aux head, new to the run, warms up (``head_warmup``); none otherwise."""
        plan = self.program.stages[stage_index]
        if (self.controller is None or plan.head is None
                or plan.output not in self.controller.warming_cuts(self.epoch, step, self.steps_per_epoch)):
            return frozenset()
        return frozenset(plan.params) - frozenset(plan.head.params)


class Team(Protocol):
    """How the processes of a run share it: ``SingleProcess``, or the ranks of a parallel run
    (``llcompile/train/parallel/``). After ``train_epoch`` every process holds every stage's state."""

    writes: bool  # this process writes the run directory

    def share(self, compute: Callable[[], T]) -> T:
        """``compute()`` once (on rank 0), its result (or its LLCompileError) in every process."""

    def train_epoch(self, work: EpochWork, interrupt: DeferredInterrupt, show_progress: bool) -> int | None:
        """Train the epoch, adding to ``work.sums``; None, or the step a Ctrl-C stopped it at."""

    def test_accuracy(self, stages: list[TrainableStage], backend: Backend, dataset: Dataset,
                      batch_size: int) -> float: ...

    def describe(self) -> dict:
        """Fields this team adds to the epoch's metrics record."""

    def interrupt(self) -> DeferredInterrupt:
        """What Ctrl-C does: stop at the next step boundary (one process), or end the rank at once."""
