"""``synthetic[:N]``: a learnable task of any input shape and class count, for smoke-testing any program.

Each class has one fixed random template; a sample is its class's template plus as much Gaussian
noise again. Everything comes from a fixed seed, so the data is the same on every run.
"""

from __future__ import annotations

import numpy as np

from .dataset import Splits

DEFAULT_TRAIN_SAMPLES = 1024
NOISE_STD = 1.0  # templates have std 1 too: learnable, but no sample equals its template
SEED = 0


def make_synthetic_splits(train_samples: int, input_shape: tuple[int, ...], num_classes: int) -> Splits:
    rng = np.random.default_rng(SEED)
    templates = rng.standard_normal((num_classes, *input_shape), dtype=np.float32)
    train_x, train_y = _noisy_samples(rng, templates, train_samples)
    test_x, test_y = _noisy_samples(rng, templates, max(1, train_samples // 4))
    return Splits(train_x, train_y, test_x, test_y, num_classes=num_classes, augment=False)


def _noisy_samples(
    rng: np.random.Generator, templates: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    # as balanced as the count allows, in random order
    labels = rng.permutation(np.arange(count) % len(templates)).astype(np.int64)
    noise = rng.standard_normal((count, *templates.shape[1:]), dtype=np.float32)
    return templates[labels] + NOISE_STD * noise, labels
