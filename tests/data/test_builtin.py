"""The built-in data sets: digits, mnist1d (offline), synthetic; fitting samples to the program's shape."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from llcompile.data import BatchLoader, load_dataset
from llcompile.data.dataset import Splits, fit_to_program


def no_network(*args, **kwargs):
    raise AssertionError("the data set tried to reach the network")


@pytest.fixture(scope="module")
def mnist1d_load():
    """mnist1d loaded once for the module, with the network cut off and the global RNGs watched."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", no_network)
        patch.setattr(socket, "create_connection", no_network)
        random.seed(7)
        np.random.seed(7)
        dataset = load_dataset("mnist1d", (1, 40), 10)
        rng_draws = (random.random(), np.random.random())
    random.seed(7)
    np.random.seed(7)
    return dataset, rng_draws, (random.random(), np.random.random())


def test_digits():
    dataset = load_dataset("digits", (1, 8, 8), 10)
    assert dataset.train_x.shape == (1437, 1, 8, 8) and dataset.test_x.shape == (360, 1, 8, 8)
    assert dataset.train_x.dtype == np.float32 and dataset.train_x.min() == 0 and dataset.train_x.max() == 16
    assert (dataset.name, dataset.num_classes, dataset.augment) == ("digits", 10, False)
    # stratified: 35 to 37 test images of each digit
    assert np.bincount(dataset.test_y).min() >= 35 and np.bincount(dataset.test_y).max() <= 37
    np.testing.assert_array_equal(load_dataset("digits", (1, 8, 8), 10).test_y, dataset.test_y)  # a fixed split
    x, y = next(iter(BatchLoader(dataset, "train", 1437, seed=0, epoch=0)))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_digits_for_a_flat_input():
    dataset = load_dataset("digits", (64,), 12)
    assert dataset.train_x.shape == (1437, 64) and dataset.sample_shape == (64,)
    assert dataset.num_classes == 10  # the data's classes; the model may output more
    x, _ = next(iter(BatchLoader(dataset, "test", 32, seed=0, epoch=0)))
    assert x.shape == (32, 64)


def test_mnist1d(mnist1d_load):
    dataset, _, _ = mnist1d_load
    assert dataset.train_x.shape == (4000, 1, 40) and dataset.test_x.shape == (1000, 1, 40)
    assert dataset.train_x.dtype == np.float32 and dataset.num_classes == 10
    assert sorted(set(dataset.train_y.tolist())) == list(range(10))
    assert dataset.mean.shape == dataset.std.shape == (1,)


def test_mnist1d_leaves_the_global_generators_alone(mnist1d_load):
    _, draws_after_load, draws_without_load = mnist1d_load
    assert draws_after_load == draws_without_load


@pytest.mark.parametrize("input_shape", [(1, 1, 40), (40,)])
def test_mnist1d_reshaped_for_the_program(mnist1d_load, input_shape):
    dataset, _, _ = mnist1d_load
    # fitted again from the loaded arrays: the same step load_dataset takes, without generating them again
    splits = Splits(dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y, 10, augment=False)
    reshaped = fit_to_program("mnist1d", splits, input_shape, 10)
    assert reshaped.train_x.shape == (4000, *input_shape) and reshaped.sample_shape == input_shape
    np.testing.assert_array_equal(reshaped.train_x.reshape(4000, 40), dataset.train_x.reshape(4000, 40))
    x, _ = next(iter(BatchLoader(reshaped, "train", 8, seed=0, epoch=0)))
    assert x.shape == (8, *input_shape)


@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((3, 32, 32), 10), ((1, 40), 4), ((20,), 3), ((2, 6, 6), 100)]
)
def test_synthetic_takes_any_shape_and_class_count(input_shape, num_classes):
    dataset = load_dataset("synthetic", input_shape, num_classes)
    assert dataset.train_x.shape == (1024, *input_shape) and dataset.test_x.shape == (256, *input_shape)
    assert dataset.train_x.dtype == np.float32 and dataset.num_classes == num_classes
    assert set(dataset.train_y.tolist()) == set(range(num_classes))
    again = load_dataset("synthetic", input_shape, num_classes)
    np.testing.assert_array_equal(again.train_x, dataset.train_x)


def test_synthetic_with_a_sample_count_and_a_limit():
    dataset = load_dataset("synthetic:100", (4, 4), 5)
    assert len(dataset.train_x) == 100 and len(dataset.test_x) == 25
    limited = load_dataset("synthetic:100", (4, 4), 5, limit=10)
    assert len(limited.train_x) == len(limited.test_x) == 10
    np.testing.assert_array_equal(limited.train_x, dataset.train_x[:10])


@pytest.mark.parametrize(("input_shape", "num_classes"), [((3, 32, 32), 10), ((1, 40), 10), ((16,), 4)])
def test_synthetic_is_learnable(input_shape, num_classes):
    """A nearest-class-mean classifier fitted on the train split gets the test split nearly right."""
    dataset = load_dataset("synthetic", input_shape, num_classes)
    train = dataset.train_x.reshape(len(dataset.train_x), -1)
    test = dataset.test_x.reshape(len(dataset.test_x), -1)
    means = np.stack([train[dataset.train_y == label].mean(axis=0) for label in range(num_classes)])
    predicted = np.argmin(((test[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    accuracy = float((predicted == dataset.test_y).mean())
    assert accuracy > 0.9, f"accuracy {accuracy} (chance {1 / num_classes})"
