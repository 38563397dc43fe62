"""Which rank holds which stages: consecutive stages per rank, balanced by measured step time.

A rank holding several consecutive stages runs them in order. The default grouping minimises
the largest per-rank sum of the stages' step times, measured on rank 0 over a few steps of the
epoch's first batch with a throwaway copy of the stages (the run's own stages are untouched);
where that copy does not fit in memory, the cost model's MACs per stage stand in for the times.
"""

from __future__ import annotations

import time
from functools import cache

import torch

from llcompile.cost.cost_model import cost_program
from llcompile.train.epoch import EpochWork
from llcompile.train.loop import train_loader
from llcompile.train.step import step_lr, train_stage

PROBE_STEPS = 3  # the first is a warm-up and not counted


def groups(counts: list[int] | tuple[int, ...]) -> list[list[int]]:
    """The stage indices of each rank for ``counts`` consecutive stages per rank."""
    starts = [sum(counts[:r]) for r in range(len(counts))]
    return [list(range(start, start + count)) for start, count in zip(starts, counts)]


def balance(costs: list[float], ranks: int) -> list[int]:
    """Counts of consecutive stages per rank that minimise the largest group's cost. Every rank
    gets a stage while there are enough; beyond that the last ranks get none (they pass
    activations on)."""
    n = len(costs)
    filled = min(ranks, n)

    @cache
    def best(start: int, parts: int) -> tuple[float, tuple[int, ...]]:
        """Stages ``start:`` in ``parts`` non-empty groups: (largest group cost, counts)."""
        if parts == 1:
            return sum(costs[start:]), (n - start,)
        options = []
        for end in range(start + 1, n - parts + 2):
            rest, counts = best(end, parts - 1)
            options.append((max(sum(costs[start:end]), rest), (end - start, *counts)))
        return min(options)

    return list(best(0, filled)[1]) + [0] * (ranks - filled)


def stage_costs(work: EpochWork) -> list[float]:
    """Per stage: the measured step time, or its MACs per step (cost model) if measuring runs out of memory."""
    try:
        return measure_stage_seconds(work)
    except (torch.OutOfMemoryError, MemoryError):
        costs = cost_program(work.program, work.config.batch_size, work.config.optimizer.name).stages
        return [float(stage.macs()["total"]) for stage in costs]


def measure_stage_seconds(work: EpochWork) -> list[float]:
    """Seconds of one training step of each stage, on the epoch's first batch."""
    stages = work.backend.build(work.program, work.config.optimizer)
    x, labels = next(iter(train_loader(work.dataset, work.config, work.epoch)))
    lr = step_lr(work.config, work.epoch, 0, work.steps_per_epoch)
    seconds = [0.0] * len(stages)
    for probe in range(PROBE_STEPS):
        activation, batch_labels = work.backend.to_batch(x, labels)
        for index, stage in enumerate(stages):
            started = time.perf_counter()
            activation, _, _ = train_stage(work, stage, index, activation, batch_labels, lr, 0)
            work.backend.to_numpy(activation[:1])  # waits for an asynchronous device
            if probe > 0:
                seconds[index] += time.perf_counter() - started
    return seconds
