"""``digits``: scikit-learn's 1,797 8x8 handwritten digits (pixel values 0..16), shipped with the package."""

from __future__ import annotations

import numpy as np

from .dataset import Splits

TEST_SIZE = 360  # 1437 train / 360 test, about 80/20
SPLIT_SEED = 0


def load_digits_splits() -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None]  # [N, 1, 8, 8]
    labels = digits.target.astype(np.int64)
    # stratified and seeded: every run, every machine, sees the same split with balanced classes
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED
    )
    return Splits(train_x, train_y, test_x, test_y, num_classes=10, augment=False)
