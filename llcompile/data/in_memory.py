"""Data a Python caller already holds: numpy arrays, a torch ``Dataset`` or ``DataLoader``, as splits."""

from __future__ import annotations

from typing import Any

import numpy as np

from llcompile.errors import DataError

from .dataset import Splits

IN_MEMORY = "in-memory"  # what a run records as its data


def in_memory_splits(train: Any, test: Any) -> Splits:
    """The train and test splits from ``(x, y)`` arrays, a torch ``Dataset`` (items ``(x, y)``) or a
    ``DataLoader`` (batches ``(x, y)``) each; read once, in order. The classes are the labels seen
    (their largest + 1); no augmentation (the caller's data is taken as it is)."""
    train_x, train_y = _arrays(train, "train")
    test_x, test_y = _arrays(test, "test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"train samples have shape {train_x.shape[1:]}, test samples {test_x.shape[1:]}")
    classes = int(max(train_y.max(initial=-1), test_y.max(initial=-1))) + 1
    return Splits(train_x, train_y, test_x, test_y, num_classes=classes, augment=False)


def _arrays(split: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(split, tuple) and len(split) == 2:
        x, y = (np.asarray(part) for part in split)
    elif hasattr(split, "__iter__") and hasattr(split, "batch_size"):  # a DataLoader: batches
        batches = [(np.asarray(bx), np.asarray(by)) for bx, by in split]
        if not batches:
            raise DataError(f"the {name} DataLoader yields no batches")
        x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    elif hasattr(split, "__getitem__") and hasattr(split, "__len__"):  # a map-style Dataset: samples
        samples = [split[i] for i in range(len(split))]
        x, y = np.stack([np.asarray(s[0]) for s in samples]), np.array([int(s[1]) for s in samples])
    else:
        raise DataError(f"the {name} data is (x, y) arrays, a torch Dataset or a DataLoader, "
                        f"not {type(split).__name__}")
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"the {name} data needs samples x [N, ...] and labels y [N]; got x {list(x.shape)}, "
                        f"y {list(y.shape)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"the {name} labels are class indices (integers), not {y.dtype}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32, copy=False)
    return x, y.astype(np.int64, copy=False)
