"""BatchLoader: order and augmentation as pure functions of (seed, epoch, step), normalisation, prefetching."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from llcompile.data import BatchLoader, Dataset, measure_loader_throughput
from llcompile.data.augment import crop_flip, draw_crop_flip
from llcompile.data.dataset import channel_stats


def image_dataset(count: int = 50, test_count: int = 20, augment: bool = True) -> Dataset:
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (count, 3, 8, 8), dtype=np.uint8)
    mean, std = channel_stats(train_x)
    return Dataset(
        name="images",
        train_x=train_x,
        train_y=rng.integers(0, 10, count),
        test_x=rng.integers(0, 256, (test_count, 3, 8, 8), dtype=np.uint8),
        test_y=rng.integers(0, 10, test_count),
        num_classes=10,
        sample_shape=(3, 8, 8),
        mean=mean,
        std=std,
        augment=augment,
    )


def id_dataset(count: int = 23) -> Dataset:
    """Float samples whose one value is their index and whose normalisation is the identity."""
    ids = np.arange(count, dtype=np.float32).reshape(count, 1)
    identity = (np.zeros(1, np.float32), np.ones(1, np.float32))
    return Dataset("ids", ids, np.arange(count), ids[:7], np.arange(7), 10, (1,), *identity, augment=False)


def batches(loader: BatchLoader) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(loader)


def assert_same_batches(first, second) -> None:
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)


def test_batches_have_the_program_layout():
    dataset = image_dataset()
    x, y = next(iter(BatchLoader(dataset, "train", 16, seed=0, epoch=0)))
    assert x.shape == (16, 3, 8, 8) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (16,) and y.dtype == np.int64


def test_same_seed_and_epoch_give_the_same_batches():
    dataset = image_dataset()
    first = batches(BatchLoader(dataset, "train", 8, seed=3, epoch=2))
    assert_same_batches(first, batches(BatchLoader(dataset, "train", 8, seed=3, epoch=2)))


def test_another_epoch_or_seed_gives_another_order():
    dataset = id_dataset()
    def order(seed: int, epoch: int) -> list[int]:
        return np.concatenate([y for _, y in BatchLoader(dataset, "train", 5, seed=seed, epoch=epoch)]).tolist()

    orders = {(seed, epoch): order(seed, epoch) for seed, epoch in [(0, 0), (0, 1), (1, 0)]}
    assert len({tuple(order) for order in orders.values()}) == 3
    # the train order is default_rng([seed, epoch])'s permutation
    assert orders[(0, 1)] == np.random.default_rng([0, 1]).permutation(23).tolist()


def test_an_epoch_visits_every_training_sample_once():
    loader = BatchLoader(id_dataset(), "train", 5, seed=0, epoch=0)
    assert len(loader) == 5
    seen = np.concatenate([x[:, 0] for x, _ in loader])
    assert sorted(seen.tolist()) == list(range(23))
    assert [len(y) for _, y in loader] == [5, 5, 5, 5, 3]


def test_drop_last_drops_the_short_batch():
    loader = BatchLoader(id_dataset(), "train", 5, seed=0, epoch=0, drop_last=True)
    assert len(loader) == 4 and [len(y) for _, y in loader] == [5] * 4


@pytest.mark.parametrize("start_step", [0, 1, 3, 7])
def test_start_step_resumes_exactly(start_step):
    dataset = image_dataset()
    full = batches(BatchLoader(dataset, "train", 7, seed=5, epoch=4))
    resumed = BatchLoader(dataset, "train", 7, seed=5, epoch=4, start_step=start_step)
    assert len(resumed) == len(full) == 8
    assert_same_batches(batches(resumed), full[start_step:])


def test_start_step_does_not_build_the_skipped_batches(monkeypatch):
    built = []
    loader = BatchLoader(image_dataset(), "train", 7, seed=0, epoch=0, start_step=6)
    original = loader.batch
    monkeypatch.setattr(loader, "batch", lambda step: built.append(step) or original(step))
    batches(loader)
    assert built == [6, 7]


def test_start_step_outside_the_epoch():
    with pytest.raises(ValueError, match="outside the epoch's 8 steps"):
        BatchLoader(image_dataset(), "train", 7, seed=0, epoch=0, start_step=9)


def test_augmentation_comes_from_seed_epoch_and_step():
    dataset = image_dataset()
    loader = BatchLoader(dataset, "train", 16, seed=2, epoch=1)
    order = np.random.default_rng([2, 1]).permutation(50)
    for step, (x, y) in enumerate(loader):
        rows = order[step * 16:(step + 1) * 16]
        params = draw_crop_flip(np.random.default_rng([2, 1, step]), len(rows))
        augmented = crop_flip(dataset.train_x[rows], params)
        expected = (augmented / 255.0 - dataset.mean[:, None, None]) / dataset.std[:, None, None]
        np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y, dataset.train_y[rows])


def test_augmentation_can_be_switched_off_and_differs_when_on():
    dataset = image_dataset()
    plain = BatchLoader(dataset, "train", 50, seed=0, epoch=0, augment=False).batch(0)[0]
    augmented = BatchLoader(dataset, "train", 50, seed=0, epoch=0).batch(0)[0]
    assert not np.array_equal(plain, augmented)
    unaugmented = BatchLoader(image_dataset(augment=False), "train", 50, seed=0, epoch=0).batch(0)[0]
    np.testing.assert_array_equal(plain, unaugmented)


def test_the_test_split_is_in_order_and_never_augmented():
    dataset = image_dataset()
    x = np.concatenate([x for x, _ in BatchLoader(dataset, "test", 6, seed=0, epoch=0)])
    expected = (dataset.test_x / 255.0 - dataset.mean[:, None, None]) / dataset.std[:, None, None]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="never augmented"):
        BatchLoader(dataset, "test", 6, seed=0, epoch=0, augment=True)


def test_augmentation_needs_images():
    with pytest.raises(ValueError, match=r"needs \(C, H, W\) samples"):
        BatchLoader(id_dataset(), "train", 4, seed=0, epoch=0, augment=True)


def test_float_samples_are_normalised_per_channel():
    rng = np.random.default_rng(0)
    scale, offset = np.array([[3.0], [0.5]]), np.array([[10.0], [-2.0]])
    train_x = (rng.normal(size=(400, 2, 5)) * scale + offset).astype(np.float32)
    mean, std = channel_stats(train_x)
    np.testing.assert_allclose(mean, train_x.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, train_x.std(axis=(0, 2)), rtol=1e-5)
    labels = np.zeros(400, np.int64)
    dataset = Dataset("floats", train_x, labels, train_x, labels, 1, (2, 5), mean, std, augment=False)
    x = np.concatenate([x for x, _ in BatchLoader(dataset, "test", 64, seed=0, epoch=0)])
    np.testing.assert_allclose(x.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2)), 1, atol=1e-4)


def test_uint8_statistics_are_those_of_x_over_255():
    x = np.random.default_rng(1).integers(0, 256, (30, 3, 4, 4), dtype=np.uint8)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 2, 3)), rtol=1e-6)
    assert mean.dtype == std.dtype == np.float32


def test_a_constant_channel_is_not_divided_by_zero():
    x = np.zeros((10, 2, 3, 3), np.uint8)
    x[:, 1] = np.arange(10)[:, None, None]
    assert channel_stats(x)[1].tolist()[0] == 1.0


def test_leaving_early_stops_the_prefetch_thread():
    before = threading.active_count()
    for step, _ in enumerate(BatchLoader(image_dataset(), "train", 2, seed=0, epoch=0)):
        if step == 1:
            break
    assert threading.active_count() == before


def test_an_error_while_building_a_batch_reaches_the_consumer(monkeypatch):
    loader = BatchLoader(image_dataset(), "train", 7, seed=0, epoch=0)
    original = loader.batch

    def failing(step):
        if step == 2:
            raise RuntimeError("broken batch 2")
        return original(step)

    monkeypatch.setattr(loader, "batch", failing)
    received = []
    with pytest.raises(RuntimeError, match="broken batch 2"):
        for batch in loader:
            received.append(batch)
    assert len(received) == 2


def marker_dataset(count: int) -> Dataset:
    """1x16x16 images, all zero but for a 255 at (8, 8) and a 128 right of it: where the 255 lands
    gives an image's shift (never out of frame: shifts are at most 4 pixels), which side the 128 is
    on whether it was mirrored. Normalisation is x / 255."""
    images = np.zeros((count, 1, 16, 16), np.uint8)
    images[:, 0, 8, 8], images[:, 0, 8, 9] = 255, 128
    identity = (np.zeros(1, np.float32), np.ones(1, np.float32))
    return Dataset("markers", images, np.arange(count), images[:1], np.zeros(1, np.int64), 10, (1, 16, 16),
                   *identity, augment=True)


def test_delivered_batches_have_uniform_shifts_and_half_mirrored():
    """Read every image's shift and mirror back from the batches the loader delivers over an epoch:
    shifts uniform over -4..4 on both axes (expected 900 / 9 = 100 each), about half mirrored, every
    image once, the label still with its image."""
    loader = BatchLoader(marker_dataset(900), "train", 100, seed=0, epoch=0)
    downs, rights, mirrored, labels, delivered = [], [], [], [], []
    for x, y in loader:
        delivered.append(x)
        pixels = np.rint(x * 255).astype(np.int64)  # back from x / 255
        np.testing.assert_allclose(x, pixels / 255, atol=1e-6)
        assert set(np.unique(pixels).tolist()) == {0, 128, 255}  # both markers in frame, nothing else
        for image in pixels[:, 0]:
            (row,), (col,) = np.nonzero(image == 255)
            (row_128,), (col_128,) = np.nonzero(image == 128)
            assert row_128 == row and abs(col_128 - col) == 1
            flipped = col_128 < col
            downs.append(row - 8)
            rights.append((15 - col if flipped else col) - 8)  # a mirror sends column c to 15 - c
            mirrored.append(flipped)
        labels.extend(y.tolist())
    assert sorted(labels) == list(range(900))
    for shifts in (downs, rights):
        counts = np.bincount(np.asarray(shifts) + 4, minlength=9)
        assert len(counts) == 9 and counts.min() >= 60 and counts.max() <= 140, counts  # 100 +- 4 sigma
    assert 0.43 <= np.mean(mirrored) <= 0.57  # 0.5 +- 4 sigma for 900 images
    # another epoch draws other shifts for the same images
    other = [x for x, _ in BatchLoader(marker_dataset(900), "train", 100, seed=0, epoch=1)]
    assert not any(np.array_equal(a, b) for a, b in zip(other, delivered))


def test_throughput_counts_the_images_of_at_most_max_steps_batches(monkeypatch):
    """The rate's arithmetic on a fake clock (2.5 s between its two readings): the images of the
    first ``max_steps`` batches, over the elapsed time. Real rates belong in benchmarks/."""
    from types import SimpleNamespace

    import llcompile.data.throughput as throughput

    batches_ = [(np.zeros((n, 1), np.float32), np.zeros(n, np.int64)) for n in (8, 8, 8, 8, 3)]
    for max_steps, images in [(3, 24), (10, 35)]:
        readings = iter([100.0, 102.5])
        monkeypatch.setattr(throughput, "time", SimpleNamespace(perf_counter=lambda: next(readings)))
        assert measure_loader_throughput(batches_, max_steps=max_steps) == images / 2.5


@pytest.mark.parametrize(("split", "batch_size"), [("valid", 4), ("train", 0)])
def test_bad_arguments(split, batch_size):
    with pytest.raises(ValueError):
        BatchLoader(image_dataset(), split, batch_size, seed=0, epoch=0)
