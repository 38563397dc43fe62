"""What the ranks of a parallel run share: rank 0's decisions, evaluation, epoch sums, state.

Every rank runs the same loop (``llcompile/train/loop.py``) with every stage built; a rank
trains only its own stages. At the end of an epoch every rank's stages' state goes to every
rank by name, so each holds the full state: rank 0 evaluates and writes one consistent
checkpoint, and every rank takes the same boundary and prefix decisions from the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from llcompile.backends.base import Backend, TrainableStage
from llcompile.data import Dataset
from llcompile.errors import LLCompileError
from llcompile.train.interrupt import DeferredInterrupt
from llcompile.train.epoch import EpochSums
from llcompile.train.loop import evaluate
from llcompile.train.parallel.options import ParallelOptions

T = TypeVar("T")


class RankTeam:
    """The part of ``loop.Team`` every parallel mode shares; ``train_epoch`` is the mode's."""

    def __init__(self, options: ParallelOptions, device: torch.device):
        self.options = options
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.writes = self.rank == 0
        self.device = device  # where this rank's tensors meet torch.distributed
        self.record: dict = {}

    def share(self, compute: Callable[[], T]) -> T:
        box: list = [None]
        if self.rank == 0:
            try:
                box = [(True, compute())]
            except LLCompileError as exc:
                box = [(False, str(exc))]
                dist.broadcast_object_list(box, src=0, device=self.device)
                raise
        dist.broadcast_object_list(box, src=0, device=self.device)
        ok, value = box[0]
        if not ok:
            raise LLCompileError(value)
        return value

    def test_accuracy(self, stages: list[TrainableStage], backend: Backend, dataset: Dataset,
                      batch_size: int) -> float:
        return self.share(lambda: evaluate(stages, backend, dataset, batch_size))

    def describe(self) -> dict:
        return {"parallel": self.record}

    def interrupt(self) -> DeferredInterrupt:
        """Never requested: ranks stopping at different steps would wait on each other for ever.
        A rank ends at once on SIGINT (``worker.py``); the run resumes from its last epoch."""
        return DeferredInterrupt(install=False)

    def finish_epoch(self, stages: list[TrainableStage], sums: EpochSums, local: EpochSums, *, trained: list[int],
                     shared: list[int], started: float, busy_s: float, bytes_sent: int, steps: int,
                     placement: list[list[str]]) -> None:
        """Add every rank's ``local`` sums to the epoch's ``sums``, give every rank the state of
        the stages each ``shared``, and keep the epoch's ``parallel`` record (this rank
        ``trained`` those stages, ``busy_s`` of the time since ``started``)."""
        wall = time.perf_counter() - started
        mine = {"rank": self.rank, "stages": [stages[i].name for i in trained], "busy_s": busy_s,
                "idle_s": max(wall - busy_s, 0.0), "busy_share": busy_s / max(wall, 1e-9),
                "bytes_sent": bytes_sent, "steps": steps}
        state = {}
        for index in shared:
            state.update(stages[index].state())
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, (local.__dict__, mine, wall, state))
        merged: dict = {}
        for part_sums, _, _, part_state in parts:
            for name, value in part_sums["loss"].items():
                sums.loss[name] = sums.loss.get(name, 0.0) + value
            for name, value in part_sums["correct"].items():
                sums.correct[name] = sums.correct.get(name, 0) + value
            sums.samples += part_sums["samples"]
            sums.peak_memory_bytes = max(sums.peak_memory_bytes, part_sums["peak_memory_bytes"])
            merged.update(part_state)
        sums.seconds += max(part[2] for part in parts)  # the epoch's wall time: until the slowest rank is done
        for stage in stages:
            stage.load_state(merged)
        self.record = {"mode": self.options.mode, "world_size": self.world_size, "placement": placement,
                       "ranks": [part[1] for part in parts]}
