"""CIFAR-style augmentation, vectorised over the batch: random crop with zero padding, then a random mirror."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 4  # pixels of zero padding around each image before cropping back to its size


@dataclass
class CropFlip:
    """Per image: the crop window's top-left corner in the padded image, and whether to mirror it."""

    top: np.ndarray  # [B] in 0..2*PAD; the image moves down by PAD - top
    left: np.ndarray  # [B] in 0..2*PAD
    flip: np.ndarray  # [B] bool


def draw_crop_flip(rng: np.random.Generator, batch: int) -> CropFlip:
    return CropFlip(
        top=rng.integers(0, 2 * PAD + 1, batch),
        left=rng.integers(0, 2 * PAD + 1, batch),
        flip=rng.random(batch) < 0.5,
    )


def crop_flip(images: np.ndarray, params: CropFlip) -> np.ndarray:
    """[B, C, H, W] -> [B, C, H, W]: each image's window of the zero-padded batch, mirrored where asked."""
    batch, channels, height, width = images.shape
    padded_height, padded_width = height + 2 * PAD, width + 2 * PAD
    padded = np.zeros((batch, channels, padded_height, padded_width), images.dtype)
    padded[:, :, PAD:PAD + height, PAD:PAD + width] = images
    rows = params.top[:, None] + np.arange(height)  # [B, H]
    cols = params.left[:, None] + np.arange(width)  # [B, W]
    # a mirrored crop reads its window's columns right to left
    cols = np.where(params.flip[:, None], cols[:, ::-1], cols)
    # one flat gather is ~3x faster than numpy's four-array fancy indexing
    within_plane = (rows[:, :, None] * padded_width + cols[:, None, :]).reshape(batch, 1, height * width)
    plane_starts = (np.arange(batch * channels) * padded_height * padded_width).reshape(batch, channels, 1)
    return padded.reshape(-1).take(within_plane + plane_starts).reshape(images.shape)
