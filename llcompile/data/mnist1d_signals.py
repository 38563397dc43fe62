"""``mnist1d``: the MNIST-1D signals (4,000 train + 1,000 test, length 40), generated locally.

``mnist1d.data.get_dataset`` downloads a pickle by default; ``make_dataset`` generates the data
from the package's templates with its default arguments (seed 42) and never touches the network,
so that is what is called here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from .dataset import Splits


def load_mnist1d_splits() -> Splits:
    from mnist1d.data import get_dataset_args, make_dataset

    data = _preserving_global_rngs(lambda: make_dataset(get_dataset_args()))
    return Splits(
        train_x=data["x"].astype(np.float32)[:, None],  # [N, 1, 40]: one channel
        train_y=data["y"].astype(np.int64),
        test_x=data["x_test"].astype(np.float32)[:, None],
        test_y=data["y_test"].astype(np.int64),
        num_classes=10,
        augment=False,
    )


def _preserving_global_rngs(make: Callable[[], dict]) -> dict:
    """make_dataset seeds Python's and numpy's global generators; leave the caller's streams as they were."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return make()
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
