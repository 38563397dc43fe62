"""cifar10:PATH in its three layouts, the decode cache, and the shared CIFAR-10 zip."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llcompile.data import cifar10 as cifar10_module
from llcompile.data import load_dataset
from llcompile.util.cache_dir import cache_root
from llcompile.data.decode import decode_images
from llcompile.data.image_tree import list_zip_tree
from tests.data.builders import image_files, write_python_batches, write_zip

SHAPE = (3, 32, 32)
SHARED_ZIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.zip"


def load(path: Path, num_classes: int = 3, limit: int | None = None):
    return load_dataset(f"cifar10:{path}", SHAPE, num_classes, limit=limit)


def assert_same_arrays(dataset, tiny) -> None:
    for name in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(dataset, name), getattr(tiny, name), err_msg=name)


@pytest.mark.parametrize("layout", ["batches", "tree", "zip", "zip_with_top_folder", "batches_parent"])
def test_every_layout_loads_the_same_arrays(layout, tiny, tmp_path, batches_dir, tree_dir):
    path = {
        "batches": batches_dir,
        "batches_parent": batches_dir.parent,  # the folder torchvision downloads into
        "tree": tree_dir,
        "zip": write_zip(tmp_path / "flat.zip", tree_dir),
        "zip_with_top_folder": write_zip(tmp_path / "top.zip", tree_dir, top_folder="cifar10"),
    }[layout]
    dataset = load(path)
    assert_same_arrays(dataset, tiny)
    assert dataset.train_x.dtype == np.uint8 and dataset.train_y.dtype == np.int64
    assert (dataset.name, dataset.num_classes, dataset.sample_shape) == ("cifar10", 3, SHAPE)
    assert dataset.augment


def test_labels_follow_sorted_class_folder_names(tmp_path):
    # one flat colour per class: the loaded label of each image says which folder it came from
    shades = {"zebra": 250, "ant": 10, "moth": 130}
    for split in ("train", "test"):
        for name, shade in shades.items():
            folder = tmp_path / "tree" / split / name
            folder.mkdir(parents=True)
            Image.new("RGB", (32, 32), (shade,) * 3).save(folder / "0.png")
    dataset = load(tmp_path / "tree")
    assert dataset.train_y.tolist() == [0, 1, 2]  # round-robin order: ant, moth, zebra
    assert dataset.train_x[:, 0, 0, 0].tolist() == [10, 130, 250]


def test_jpeg_grayscale_and_hidden_files_in_a_zip(tmp_path, tiny):
    """Any format Pillow reads, converted to RGB; dot-files and __MACOSX are not images of the tree."""
    zip_path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for index, (relative, image) in enumerate(image_files(tiny).items()):
            encoded = io.BytesIO()
            pil = Image.fromarray(image)
            (pil.convert("L") if index % 3 == 0 else pil).save(encoded, "JPEG" if index % 2 else "PNG")
            archive.writestr(f"top/{relative}", encoded.getvalue())
        archive.writestr("top/train/cat/.DS_Store", b"\0junk")
        archive.writestr("__MACOSX/top/train/cat/._0000.png", b"\0junk")
    dataset = load(zip_path)
    assert dataset.train_x.shape == tiny.train_x.shape and dataset.test_x.shape == tiny.test_x.shape
    np.testing.assert_array_equal(dataset.train_y, tiny.train_y)
    grey = dataset.train_x[0]  # first file, saved as grayscale PNG: exact, three equal planes
    np.testing.assert_array_equal(grey[0], grey[1])
    expected = Image.fromarray(tiny.train_x[0].transpose(1, 2, 0)).convert("L")
    np.testing.assert_array_equal(grey[0], np.asarray(expected))


def test_limit_reads_a_prefix_that_covers_every_class(tree_zip, batches_dir, tiny):
    for path in (tree_zip, batches_dir):
        dataset = load(path, limit=5)
        assert len(dataset.train_x) == len(dataset.test_x) == 5
        np.testing.assert_array_equal(dataset.train_x, tiny.train_x[:5])
        assert set(dataset.train_y.tolist()) == {0, 1, 2}
        assert dataset.num_classes == 3


def test_limit_reads_only_the_python_batches_it_needs(batches_dir, monkeypatch):
    from llcompile.data import cifar_batches

    read = []
    original = cifar_batches._read_batch
    monkeypatch.setattr(cifar_batches, "_read_batch", lambda path: read.append(path.name) or original(path))
    load(batches_dir, limit=4)
    assert read == ["data_batch_1", "test_batch"]


def test_parallel_decoding_gives_the_same_images(tree_zip):
    tree = list_zip_tree(tree_zip)
    members = [member for member, _ in tree.members["train"]]
    in_two_processes = decode_images(tree.source, members, workers=2)
    np.testing.assert_array_equal(in_two_processes, decode_images(tree.source, members, workers=1))


# --- the cache


def forbid_decoding(monkeypatch) -> None:
    def fail(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(cifar10_module, "read_image_tree", fail)
    monkeypatch.setattr(cifar10_module, "read_python_batches", fail)


@pytest.mark.parametrize("layout", ["batches_dir", "tree_dir", "tree_zip"])
def test_second_load_reads_the_cache(layout, request, monkeypatch, tiny, cache_dir):
    path = request.getfixturevalue(layout)
    load(path)
    forbid_decoding(monkeypatch)
    assert_same_arrays(load(path), tiny)
    assert cache_root() == cache_dir and any(cache_dir.iterdir())
    # the cache is written in one rename: no temporary folders are left behind
    assert not [entry for entry in cache_dir.iterdir() if entry.name.startswith(".")]


def test_the_limit_is_part_of_the_key(tree_zip, monkeypatch):
    load(tree_zip)
    forbid_decoding(monkeypatch)
    with pytest.raises(AssertionError, match="decoded again"):
        load(tree_zip, limit=3)


def test_a_changed_zip_is_decoded_again(tmp_path, tree_dir, tiny):
    zip_path = write_zip(tmp_path / "data.zip", tree_dir)
    load(zip_path)
    other = tiny.train_x.copy()
    other[0] = 255 - other[0]
    Image.fromarray(other[0].transpose(1, 2, 0)).save(tree_dir / "train" / "airplane" / "0000.png")
    write_zip(zip_path, tree_dir)
    np.testing.assert_array_equal(load(zip_path).train_x, other)


def test_an_edited_image_in_a_folder_is_decoded_again(tree_dir, tiny):
    load(tree_dir)
    path = tree_dir / "test" / "cat" / "0002.png"
    Image.new("RGB", (32, 32), (7, 7, 7)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # even within one mtime tick
    assert (load(tree_dir).test_x[-1] == 7).all()


def test_a_changed_batch_file_is_decoded_again(tmp_path, tiny):
    folder = write_python_batches(tmp_path / "b" / "cifar-10-batches-py", tiny)
    load(folder)
    (folder / "test_batch").unlink()
    tiny.test_x[:] = 3
    write_python_batches(tmp_path / "c" / "cifar-10-batches-py", tiny)
    os.replace(tmp_path / "c" / "cifar-10-batches-py" / "test_batch", folder / "test_batch")
    assert (load(folder).test_x == 3).all()


def test_a_damaged_cache_entry_is_rebuilt(tree_zip, tiny, cache_dir):
    load(tree_zip)
    (entry,) = cache_dir.iterdir()
    (entry / "train_x.npy").write_bytes(b"not numpy")
    assert_same_arrays(load(tree_zip), tiny)


def test_an_unwritable_cache_warns_and_still_loads(tree_zip, tiny, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LLCOMPILE_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot cache decoded data"):
        assert_same_arrays(load(tree_zip), tiny)


def test_default_cache_is_in_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("LLCOMPILE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "llcompile"


def test_nothing_is_written_beside_the_data(tree_dir, tree_zip, batches_dir, tmp_path, cache_dir):
    def data_files() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if cache_dir not in p.parents and p != cache_dir)

    before = data_files()
    for path in (tree_dir, tree_zip, batches_dir):
        load(path)
    assert data_files() == before


# --- the shared CIFAR-10 zip (../shared/data relative to the repository)


def test_shared_cifar10_zip_with_a_limit():
    if not SHARED_ZIP.is_file():
        pytest.skip(f"{SHARED_ZIP} is not on this machine")
    dataset = load(SHARED_ZIP, num_classes=10, limit=200)
    assert dataset.train_x.shape == dataset.test_x.shape == (200, 3, 32, 32)
    assert dataset.num_classes == 10
    # round-robin over the 10 sorted class folders: 20 of each
    np.testing.assert_array_equal(dataset.train_y, np.tile(np.arange(10), 20))
    with zipfile.ZipFile(SHARED_ZIP) as archive:
        # the second training image is the first automobile (class 1)
        expected = np.asarray(Image.open(io.BytesIO(archive.read("train/automobile/0000.jpg"))).convert("RGB"))
    np.testing.assert_array_equal(dataset.train_x[1], expected.transpose(2, 0, 1))
    # the normalisation is the per-channel statistics of these 200 training images' pixels / 255
    pixels = dataset.train_x.astype(np.float64) / 255
    np.testing.assert_allclose(dataset.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(dataset.std, pixels.std(axis=(0, 2, 3)), rtol=1e-5)
