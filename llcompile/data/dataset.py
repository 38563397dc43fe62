"""The Dataset a training run reads, and fitting a source's arrays to a program's input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llcompile.errors import DataError


@dataclass
class Splits:
    """What a data source produces, before it is fitted to a program."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    augment: bool  # whether the source's images take crop + flip augmentation

    def head(self, limit: int | None) -> Splits:
        """At most ``limit`` samples per split (the first ones)."""
        if limit is None:
            return self
        return Splits(
            self.train_x[:limit], self.train_y[:limit], self.test_x[:limit], self.test_y[:limit],
            self.num_classes, self.augment,
        )


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # [N, *sample_shape]: uint8 images (pixels 0..255) or float32
    train_y: np.ndarray  # [N] int64
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int  # classes in the data; at most the program's number of outputs
    sample_shape: tuple[int, ...]  # the program's input shape, without the batch dimension
    mean: np.ndarray  # [channels] float32, of x/255 for uint8 images, of x otherwise
    std: np.ndarray  # [channels] float32, same scale as mean
    augment: bool  # random crop (4-pixel zero padding) + horizontal flip on the train split


def channel_axis_size(sample_shape: tuple[int, ...]) -> int:
    """Channels are the first axis of a sample; a flat feature vector counts as one channel."""
    return sample_shape[0] if len(sample_shape) >= 2 else 1


def fit_to_program(name: str, splits: Splits, input_shape: tuple[int, ...], num_classes: int) -> Dataset:
    """Check the data against the program (classes, sample size), reshape it, compute its statistics."""
    input_shape = tuple(int(d) for d in input_shape)
    if splits.num_classes > num_classes:
        raise DataError(f"data has {splits.num_classes} classes, the model outputs {num_classes}")
    _check_labels(splits)
    train_x = _reshape_samples(splits.train_x, input_shape)
    test_x = _reshape_samples(splits.test_x, input_shape)
    mean, std = channel_stats(train_x)
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=splits.train_y.astype(np.int64, copy=False),
        test_x=test_x,
        test_y=splits.test_y.astype(np.int64, copy=False),
        num_classes=splits.num_classes,
        sample_shape=input_shape,
        mean=mean,
        std=std,
        # crops and flips need an image layout: (C, H, W)
        augment=splits.augment and len(input_shape) == 3,
    )


def _check_labels(splits: Splits) -> None:
    for split, labels in (("train", splits.train_y), ("test", splits.test_y)):
        if len(labels) and (labels.min() < 0 or labels.max() >= splits.num_classes):
            raise DataError(
                f"{split} labels run from {labels.min()} to {labels.max()}, "
                f"outside the data's {splits.num_classes} classes"
            )


def _reshape_samples(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    data_shape = tuple(x.shape[1:])
    if data_shape == input_shape:
        return x
    if int(np.prod(data_shape)) != int(np.prod(input_shape)):
        fits = ",".join(map(str, (1,) * (3 - len(data_shape)) + data_shape))
        hint = (f"; compile the program from a model made for this data (a zoo model: `llcompile models export "
                f"NAME --input-shape {fits}`)") if len(data_shape) <= 3 else ""
        raise DataError(f"data gives samples of shape {data_shape}, the program expects {input_shape}{hint}")
    return x.reshape((len(x), *input_shape))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the samples ``x`` (uint8 on the 0..1 scale), as float32 [channels]."""
    samples = x.reshape(len(x), channel_axis_size(tuple(x.shape[1:])), -1)
    moments = _uint8_moments if x.dtype == np.uint8 else _float_moments
    mean, std = np.array([moments(samples[:, channel].ravel()) for channel in range(samples.shape[1])]).T
    # a constant channel carries no information; dividing by 1 keeps it finite
    std = np.where(std > 0, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _float_moments(values: np.ndarray) -> tuple[float, float]:
    return values.mean(dtype=np.float64), values.std(dtype=np.float64)


def _uint8_moments(pixels: np.ndarray) -> tuple[float, float]:
    # a 256-bin histogram gives exact moments of x/255 without a float copy of the pixels
    counts = np.bincount(pixels, minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    mean = counts @ values / counts.sum()
    return mean, np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
