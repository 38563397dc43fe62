"""Learning rate as a function of the global step."""

from __future__ import annotations

import math

from llcompile.errors import LLCompileError

SCHEDULES = ("cosine", "step", "constant")


def learning_rate(schedule: str, base_lr: float, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """``cosine``: half a cosine from base_lr to 0 over the run; ``step``: x0.1 at 50 % and 75 %
    of the run (the classic CIFAR ResNet recipe); ``constant``: base_lr.

    ``warmup_steps`` W > 0: the first W steps rise linearly to base_lr (step s gets base_lr * (s + 1) / W,
    so none trains at 0), then the schedule runs over the remaining steps as if they were the whole run
    (the usual recipe for transformers, which diverge at a full learning rate from the start)."""
    if warmup_steps < 0:
        raise LLCompileError(f"warm-up steps must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return base_lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    if schedule == "constant":
        return base_lr
    raise LLCompileError(f"unknown lr schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
