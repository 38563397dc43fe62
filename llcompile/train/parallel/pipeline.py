"""``--parallel stages``: each rank trains its consecutive stages on what the previous rank sends.

Rank 0 loads the batches; every rank trains its stages on a batch and sends the detached output
and the labels on. No message goes backward (no error crosses a block boundary), so every
stage sees the same activations in the same order as in the sequential run, and with the same
per-stage seeds the weights are the same.
"""

from __future__ import annotations

import time

import torch

from llcompile.train.interrupt import DeferredInterrupt
from llcompile.train.epoch import EpochSums, EpochWork
from llcompile.train.loop import progress_bar, show_step, train_loader
from llcompile.train.memory import PeakMemoryMonitor
from llcompile.train.parallel.placement import balance, groups, stage_costs
from llcompile.train.parallel.team import RankTeam
from llcompile.train.parallel.transport import Link
from llcompile.train.step import step_lr, train_stage


class StagePipeline(RankTeam):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._counts: dict[tuple, list[int]] = {}  # per program (its stages' names and cuts): stages per rank

    def train_epoch(self, work: EpochWork, interrupt: DeferredInterrupt, show_progress: bool) -> int | None:
        names = [stage.name for stage in work.program.stages]
        placed = groups(self._placement(work))
        mine = placed[self.rank]
        link = Link(self.rank, self.world_size, self.options.max_in_flight, self.device)
        local = EpochSums()
        batches = iter(train_loader(work.dataset, work.config, work.epoch, work.start_step)) if self.rank == 0 else None
        shown = progress_bar(work, show_progress)
        busy = 0.0
        started = time.perf_counter()
        with PeakMemoryMonitor(work.config.device) as memory:
            for step in range(work.start_step, work.steps_per_epoch):
                if batches is not None:
                    x, labels = next(batches)
                    activation, batch_labels = work.backend.to_batch(x, labels)
                else:
                    activation, batch_labels = link.receive(work.backend)
                step_started = time.perf_counter()
                lr = step_lr(work.config, work.epoch, step, work.steps_per_epoch)
                for index in mine:
                    activation, loss, correct = train_stage(work, work.stages[index], index, activation,
                                                            batch_labels, lr, step)
                    if work.program.stages[index].updates is None:
                        local.add(names[index], loss, correct, len(batch_labels))
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)  # busy time is the kernels', not their launch's
                busy += time.perf_counter() - step_started
                if self.rank == 0:
                    local.samples += len(batch_labels)
                if link.next is not None:
                    link.send(activation, batch_labels)
                show_step(shown, step, local, names[-1], started, lr)
            link.drain()
            local.peak_memory_bytes = memory.peak_bytes()
        shown.close()
        self.finish_epoch(work.stages, work.sums, local, trained=mine, shared=mine, started=started, busy_s=busy,
                          bytes_sent=link.bytes_sent, steps=work.steps_per_epoch - work.start_step,
                          placement=[[names[i] for i in group] for group in placed])
        return None

    def _placement(self, work: EpochWork) -> list[int]:
        """The given ``--placement`` while it fits the program, else balanced by measured step times
        (again whenever the boundaries or the prefix move)."""
        given, stages = self.options.placement, work.program.stages
        if given is not None and sum(given) == len(stages) and len(given) == self.world_size:
            return list(given)
        key = tuple((stage.name, stage.input, stage.output) for stage in stages)
        if key not in self._counts:
            self._counts[key] = self.share(lambda: balance(stage_costs(work), self.world_size))
        return self._counts[key]
