"""Batches for one epoch: normalised float32 inputs and int64 labels, prepared one step ahead in a thread.

Every batch is a pure function of (seed, epoch, step): the train split's order is a permutation
drawn from ``default_rng([seed, epoch])`` and the augmentation of step k from
``default_rng([seed, epoch, k])``. A run resumed at any step therefore sees exactly the batches
an uninterrupted run would have seen, without generating the ones it skips.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator

import numpy as np

from .augment import crop_flip, draw_crop_flip
from .dataset import Dataset, channel_axis_size

PREFETCH_DEPTH = 3  # batches ready ahead of the consumer
POLL_SECONDS = 0.1  # how often a producer blocked on a full queue checks whether it was abandoned

Batch = tuple[np.ndarray, np.ndarray]


class BatchLoader:
    def __init__(
        self,
        dataset: Dataset,
        split: str,
        batch_size: int,
        seed: int,
        epoch: int,
        start_step: int = 0,
        augment: bool | None = None,
        drop_last: bool = False,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        train = split == "train"
        self.x, self.y = (dataset.train_x, dataset.train_y) if train else (dataset.test_x, dataset.test_y)
        self.batch_size = batch_size
        self.seed, self.epoch = seed, epoch
        self.augment = _augmentation(dataset, split, augment)
        count = len(self.y)
        self.steps = count // batch_size if drop_last else math.ceil(count / batch_size)
        if not 0 <= start_step <= self.steps:
            raise ValueError(f"start_step {start_step} is outside the epoch's {self.steps} steps")
        self.start_step = start_step
        # the test split is read in order; the train split in this epoch's order
        self.order = np.random.default_rng([seed, epoch]).permutation(count) if train else None
        self.scale, self.shift = _normalisation(dataset, self.x.dtype)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        return _prefetched(self.batch(step) for step in range(self.start_step, self.steps))

    def batch(self, step: int) -> Batch:
        """The batch of ``step``: x float32 [B, *sample_shape], y int64 [B]."""
        rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
        indices = self.order[rows] if self.order is not None else rows
        images, labels = self.x[indices], self.y[indices]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, step])
            images = crop_flip(images, draw_crop_flip(rng, len(images)))
        x = images.astype(np.float32)
        x *= self.scale
        x += self.shift
        return x, labels.astype(np.int64)


def _augmentation(dataset: Dataset, split: str, requested: bool | None) -> bool:
    if split == "test":
        if requested:
            raise ValueError("the test split is never augmented")
        return False
    if requested and len(dataset.sample_shape) != 3:
        raise ValueError(f"crop + flip needs (C, H, W) samples, not {dataset.sample_shape}")
    return dataset.augment if requested is None else requested


def _normalisation(dataset: Dataset, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) with x * scale + shift == (x / 255 - mean) / std for uint8 images,
    (x - mean) / std otherwise, broadcasting over one sample."""
    pixel_scale = 255.0 if dtype == np.uint8 else 1.0
    channels = channel_axis_size(dataset.sample_shape)
    broadcast = (channels, *[1] * (len(dataset.sample_shape) - 1)) if len(dataset.sample_shape) >= 2 else (1,)
    mean = dataset.mean.astype(np.float64).reshape(broadcast)
    std = dataset.std.astype(np.float64).reshape(broadcast)
    return (1.0 / (pixel_scale * std)).astype(np.float32), (-mean / std).astype(np.float32)


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def _prefetched(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Yield ``batches`` computed in a background thread, ``PREFETCH_DEPTH`` ahead.

    numpy's gathers, casts and arithmetic release the GIL, so the next batch is built while the
    training step runs. Leaving the loop early stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH)
    abandoned = threading.Event()

    def put(item) -> bool:
        while not abandoned.is_set():
            try:
                ready.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="llcompile-batches", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        abandoned.set()
        thread.join()
