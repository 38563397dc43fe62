"""How fast a loader alone delivers images, to tell whether it could hold training back."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable

import numpy as np


def measure_loader_throughput(loader: Iterable[tuple[np.ndarray, np.ndarray]], max_steps: int) -> float:
    """Images per second over at most ``max_steps`` batches, thread start-up included."""
    images = 0
    start = time.perf_counter()
    for x, _ in itertools.islice(loader, max_steps):
        images += len(x)
    elapsed = time.perf_counter() - start
    return images / elapsed if elapsed > 0 else float("inf")
