"""Learning rate as a function of the global step."""

from __future__ import annotations

import math

from llcompile.errors import LLCompileError

SCHEDULES = ("cosine", "step", "constant")


def learning_rate(schedule: str, base_lr: float, step: int, total_steps: int) -> float:
    """``cosine``: half a cosine from base_lr to 0 over the run; ``step``: x0.1 at 50 % and 75 %
    of the run (the classic CIFAR ResNet recipe); ``constant``: base_lr."""
    progress = step / max(total_steps, 1)
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return base_lr * (0.1 ** ((progress >= 0.5) + (progress >= 0.75)))
    if schedule == "constant":
        return base_lr
    raise LLCompileError(f"unknown lr schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
