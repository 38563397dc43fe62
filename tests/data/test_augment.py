"""Crop + flip: shifts within +-4 pixels with zero fill, exact mirrors, drawn uniformly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llcompile.data.augment import PAD, CropFlip, crop_flip, draw_crop_flip


def reference_crop_flip(image: np.ndarray, top: int, left: int, flip: bool) -> np.ndarray:
    """One image the obvious way: pad with zeros, cut the window, mirror it."""
    _, height, width = image.shape
    padded = np.pad(image, ((0, 0), (PAD, PAD), (PAD, PAD)))
    window = padded[:, top:top + height, left:left + width]
    return window[:, :, ::-1] if flip else window


def shifted(image: np.ndarray, down: int, right: int) -> np.ndarray:
    """The image moved by (down, right) pixels, zeros where nothing moved in."""
    out = np.zeros_like(image)
    _, height, width = image.shape
    out[:, max(down, 0):height + min(down, 0), max(right, 0):width + min(right, 0)] = image[
        :, max(-down, 0):height - max(down, 0), max(-right, 0):width - max(right, 0)
    ]
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 12), st.integers(1, 12))
def test_batch_matches_the_per_image_reference(seed, batch, height, width):
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, (batch, 3, height, width), dtype=np.uint8)
    params = draw_crop_flip(rng, batch)
    out = crop_flip(images, params)
    assert out.shape == images.shape and out.dtype == np.uint8
    for index in range(batch):
        expected = reference_crop_flip(images[index], params.top[index], params.left[index], params.flip[index])
        np.testing.assert_array_equal(out[index], expected)


def test_a_crop_is_a_shift_with_zero_fill_and_a_flip_an_exact_mirror():
    images = np.random.default_rng(0).integers(1, 256, (4, 3, 32, 32), dtype=np.uint8)
    params = CropFlip(
        top=np.array([0, 8, 4, 1]), left=np.array([8, 0, 4, 6]), flip=np.array([False, True, True, False])
    )
    out = crop_flip(images, params)
    for index, image in enumerate(images):
        moved = shifted(image, PAD - params.top[index], PAD - params.left[index])
        np.testing.assert_array_equal(out[index], moved[:, :, ::-1] if params.flip[index] else moved)
    np.testing.assert_array_equal(out[2], images[2, :, :, ::-1])  # centred window: a pure mirror
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, 4:, 28:] == 0).all()  # moved down 4, left 4


def test_draws_cover_every_shift_and_flip_half_the_images():
    params = draw_crop_flip(np.random.default_rng(0), 20_000)
    assert set(params.top.tolist()) == set(params.left.tolist()) == set(range(2 * PAD + 1))
    assert abs(params.flip.mean() - 0.5) < 0.02
