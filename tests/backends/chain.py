"""Drive a program's trainable stages the way the runtime does."""

import numpy as np

from llcompile.backends import make_backend
from llcompile.backends.base import OptimizerConfig


def train_chain(stages, x, labels, lr: float) -> list[float]:
    """One train step of every stage in order, each fed the previous stage's output; their losses."""
    losses = []
    for stage in stages:
        result = stage.train_step(x, labels, lr)
        losses.append(result.loss)
        x = result.output
    return losses


def losses_on_both_backends(program, x: np.ndarray, labels: np.ndarray, steps: int = 2,
                            lr: float = 0.01) -> dict[str, list[float]]:
    """Per backend (torch, ort): every stage's loss at ``steps`` training steps on the same batch, so the
    first compares the forward passes and the later ones the updates too."""
    losses = {}
    for name in ("torch", "ort"):
        backend = make_backend(name)
        stages = backend.build(program, OptimizerConfig())
        losses[name] = [float(loss) for _ in range(steps) for loss in train_chain(stages, *backend.to_batch(x, labels),
                                                                                   lr)]
    return losses
