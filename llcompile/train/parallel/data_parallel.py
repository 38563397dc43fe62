"""``--parallel data``: every rank trains every stage on its share of each batch (DistributedDataParallel).

Each batch of ``--batch-size`` is split over the ranks, so an epoch has as many steps (and the
same learning-rate schedule) as the sequential run. On torch DDP averages the gradients; on ort,
where the gradients are numpy arrays between ORT's backward and the numpy optimizer step, one
all-reduce of them all does (the same as one DDP bucket). The result is
close to, not equal to, the sequential run's: BatchNormalization sees each rank's share only,
and rank 0's running statistics are the ones kept. A Hebbian stage's new weights are averaged
over the ranks after every step. Each stage does its part (``TrainableStage.join_ranks``,
``average_over_ranks``) with the means over the ranks that this team lends it.

``bytes_sent`` is the model's figure for a ring all-reduce, not a count of socket bytes: each rank
sends 2 (N - 1) / N x the bytes reduced (the gradients, and a Hebbian stage's new weights) per step.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.distributed as dist

from llcompile.backends.base import RankMeans, TrainableStage
from llcompile.train.interrupt import DeferredInterrupt
from llcompile.train.epoch import EpochSums, EpochWork
from llcompile.train.loop import progress_bar, show_step, train_loader
from llcompile.train.memory import PeakMemoryMonitor
from llcompile.train.parallel.team import RankTeam
from llcompile.train.step import step_lr, train_stage


class DataParallel(RankTeam, RankMeans):
    """Each stage averages its gradients or Hebbian weights over the ranks by the means this team lends it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.device_ids = [self.device.index] if self.device.type == "cuda" else None
        self._joined: list[TrainableStage] = []  # the stages that joined the ranks (rebuilt on program moves)

    def train_epoch(self, work: EpochWork, interrupt: DeferredInterrupt, show_progress: bool) -> int | None:
        self._join(work.stages)
        local = EpochSums()
        shown = progress_bar(work, show_progress)
        busy = 0.0
        reduced = sum(stage.reduced_bytes() for stage in work.stages)
        steps = work.steps_per_epoch - work.start_step
        started = time.perf_counter()
        with PeakMemoryMonitor(work.config.device) as memory:
            for step, (x, labels) in enumerate(train_loader(work.dataset, work.config, work.epoch, work.start_step),
                                               start=work.start_step):
                share = np.array_split(np.arange(len(labels)), self.world_size)[self.rank]
                step_started = time.perf_counter()
                activation, batch_labels = work.backend.to_batch(x[share], labels[share])
                lr = step_lr(work.config, work.epoch, step, work.steps_per_epoch)
                for index, (stage, plan) in enumerate(zip(work.stages, work.program.stages)):
                    activation, loss, correct = train_stage(work, stage, index, activation, batch_labels, lr, step)
                    stage.average_over_ranks(self)
                    if plan.updates is None:
                        local.add(stage.name, loss, correct, len(share))
                work.after_step()
                busy += time.perf_counter() - step_started
                local.samples += len(share)
                show_step(shown, step, local, work.stages[-1].name, started, lr)
            local.peak_memory_bytes = memory.peak_bytes()
        shown.close()
        everything = list(range(len(work.stages)))
        self.finish_epoch(work.stages, work.sums, local, trained=everything,
                          shared=everything if self.rank == 0 else [], started=started, busy_s=busy,
                          bytes_sent=steps * ring_allreduce_bytes(reduced, self.world_size), steps=steps,
                          placement=[[stage.name for stage in work.stages]] * self.world_size)
        return None

    def _join(self, stages: list[TrainableStage]) -> None:
        if stages == self._joined:
            return
        for stage in stages:
            stage.join_ranks(self)
        self._joined = stages

    def average_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        means = self.mean_tensors([torch.from_numpy(array) for array in arrays.values()])
        for name, mean in zip(list(arrays), means):
            arrays[name] = mean.numpy()

    def mean_tensors(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each tensor's mean over the ranks, by one all-reduce of them all flattened into one buffer."""
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors]).to(self.device)
        dist.all_reduce(flat)
        flat /= self.world_size
        return [part.view_as(tensor) for part, tensor in zip(flat.split([t.numel() for t in tensors]), tensors)]


def ring_allreduce_bytes(reduced: int, world_size: int) -> int:
    """Bytes one rank sends in a ring all-reduce of ``reduced`` bytes over ``world_size`` ranks: a
    reduce-scatter and an all-gather, each of N - 1 chunks of 1 / N."""
    return 2 * (world_size - 1) * reduced // world_size

