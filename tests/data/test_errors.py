"""Bad data ends in one LLCompileError line that names the problem."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llcompile.data import load_dataset
from llcompile.data.decode import decode_images
from llcompile.data.image_tree import list_zip_tree
from llcompile.errors import LLCompileError
from tests.data.builders import batch_dict, write_pickle, write_zip

SHAPE = (3, 32, 32)


def load_error(spec: str, input_shape=SHAPE, num_classes: int = 10, limit: int | None = None) -> str:
    with pytest.raises(LLCompileError) as error:
        load_dataset(spec, input_shape, num_classes, limit=limit)
    message = str(error.value)
    assert "\n" not in message
    return message


# --- specs


def test_unknown_spec_lists_the_known_ones():
    message = load_error("imagenet:/data")
    assert "unknown data set 'imagenet:/data'" in message
    for known in ("cifar10:PATH", "digits", "mnist1d", "synthetic[:N]"):
        assert known in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cifar10", "needs an argument: cifar10:PATH"),
        ("cifar10:", "needs an argument: cifar10:PATH"),
        ("digits:8", "takes no argument: digits"),
        ("mnist1d:x", "takes no argument: mnist1d"),
        ("synthetic:ten", "positive number of training samples, got 'ten'"),
        ("synthetic:0", "positive number of training samples, got '0'"),
    ],
)
def test_malformed_specs(spec, expected):
    assert expected in load_error(spec)


def test_a_limit_below_one():
    assert "at least 1" in load_error("synthetic", limit=0)


# --- program mismatch


def test_more_classes_than_the_model_outputs(batches_dir):
    assert load_error(f"cifar10:{batches_dir}", num_classes=2) == "data has 3 classes, the model outputs 2"


def test_sample_shape_with_another_size(batches_dir):
    message = load_error(f"cifar10:{batches_dir}", input_shape=(1, 28, 28))
    assert message == ("data gives samples of shape (3, 32, 32), the program expects (1, 28, 28); compile the "
                       "program from a model made for this data (a zoo model: `llcompile models export NAME "
                       "--input-shape 3,32,32`)")


# --- paths and layouts


def test_missing_path(tmp_path):
    assert load_error(f"cifar10:{tmp_path / 'nowhere'}") == f"data path {tmp_path / 'nowhere'} does not exist"


def test_a_folder_of_no_known_layout_says_what_was_expected(tmp_path):
    (tmp_path / "train").mkdir()
    message = load_error(f"cifar10:{tmp_path}")
    assert "is none of the CIFAR-10 layouts" in message
    for expected in ("cifar-10-batches-py", "data_batch_1..5, test_batch", "train/<class>/*", "zip"):
        assert expected in message


def test_a_tree_with_an_empty_split(tree_dir):
    for image in (tree_dir / "test").rglob("*.png"):
        image.unlink()
    assert "has no images in test/<class>/" in load_error(f"cifar10:{tree_dir}")


def test_a_test_class_without_train_images(tree_dir):
    (tree_dir / "test" / "dog").mkdir()
    Image.new("RGB", (32, 32)).save(tree_dir / "test" / "dog" / "0.png")
    assert "test class folder 'dog' has no train/ counterpart" in load_error(f"cifar10:{tree_dir}")


def test_a_zip_without_a_tree(tmp_path):
    path = tmp_path / "flat.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/0.png", b"")
        archive.writestr("b/0.png", b"")
    message = load_error(f"cifar10:{path}")
    assert "holds no image-folder tree" in message and "train/<class>/*" in message


# --- damaged files


def test_an_image_that_fails_to_decode_is_named(tree_dir):
    broken = tree_dir / "train" / "bird" / "0003.png"
    broken.write_bytes(b"not an image")
    message = load_error(f"cifar10:{tree_dir}")
    assert message.startswith(f"cannot decode image {broken}")


def test_an_image_that_fails_to_decode_in_a_zip_is_named(tmp_path, tree_dir):
    (tree_dir / "test" / "cat" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    zip_path = write_zip(tmp_path / "data.zip", tree_dir, top_folder="top")
    message = load_error(f"cifar10:{zip_path}")
    assert message.startswith(f"cannot decode image top/test/cat/0001.png in {zip_path}")


def test_images_of_another_size_are_named(tree_dir):
    odd = tree_dir / "train" / "cat" / "0004.png"
    Image.new("RGB", (28, 30)).save(odd)
    message = load_error(f"cifar10:{tree_dir}")
    assert f"image {odd} is 28x30 pixels but" in message and "is 32x32" in message


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x00" * 100])
def test_an_unreadable_zip(tmp_path, content):
    path = tmp_path / "data.zip"
    path.write_bytes(content)
    assert load_error(f"cifar10:{path}").startswith(f"cannot read {path} as a zip")


def test_a_truncated_zip(tmp_path, tree_zip):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(tree_zip.read_bytes()[: tree_zip.stat().st_size // 2])
    assert load_error(f"cifar10:{cut}").startswith(f"cannot read {cut} as a zip")


def test_a_zip_member_with_damaged_bytes(tmp_path, tree_dir):
    path = write_zip(tmp_path / "data.zip", tree_dir)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("train/bird/0000.png")
    # flip a byte inside the member's stored data: its CRC no longer matches
    raw[info.header_offset + 30 + len(info.filename) + 40] ^= 0xFF
    path.write_bytes(bytes(raw))
    message = load_error(f"cifar10:{path}")
    assert message.startswith(f"cannot read train/bird/0000.png in {path}")


def test_a_corrupt_pickle(batches_dir):
    (batches_dir / "data_batch_2").write_bytes(b"\x80\x04garbage")
    message = load_error(f"cifar10:{batches_dir}")
    assert message.startswith(f"{batches_dir / 'data_batch_2'} is not a readable pickle")


def test_a_pickle_that_is_not_a_batch(batches_dir):
    write_pickle(batches_dir / "test_batch", [1, 2, 3])
    message = load_error(f"cifar10:{batches_dir}")
    assert "is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'" in message


def test_a_batch_with_rows_of_the_wrong_size(batches_dir):
    write_pickle(batches_dir / "test_batch", batch_dict(np.zeros((4, 3, 16, 16), np.uint8), np.zeros(4)))
    message = load_error(f"cifar10:{batches_dir}")
    assert "b'data' is uint8 [4, 768] for 4 labels, expected uint8 [4, 3072]" in message


def test_labels_outside_the_named_classes(batches_dir):
    write_pickle(batches_dir / "test_batch", batch_dict(np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 7])))
    assert load_error(f"cifar10:{batches_dir}") == "test labels run from 0 to 7, outside the data's 3 classes"


@pytest.mark.parametrize(
    ("missing", "expected"),
    [(["test_batch"], "has no test_batch"), (["data_batch_1", "data_batch_2"], "has no data_batch_N files")],
)
def test_python_batches_missing_a_file(batches_dir, missing, expected):
    for name in missing:
        (batches_dir / name).unlink()
    assert load_error(f"cifar10:{batches_dir}").startswith(f"{batches_dir} {expected}")


def test_an_unpicklable_meta_file_is_reported(batches_dir: Path):
    (batches_dir / "batches.meta").write_bytes(pickle.dumps(1)[:-1])
    assert "batches.meta is not a readable pickle" in load_error(f"cifar10:{batches_dir}")


def test_a_decoding_error_in_a_worker_process_is_named(tmp_path, tree_dir):
    (tree_dir / "train" / "cat" / "0005.png").write_bytes(b"garbage")
    tree = list_zip_tree(write_zip(tmp_path / "data.zip", tree_dir))
    with pytest.raises(LLCompileError, match="cannot decode image train/cat/0005.png in"):
        decode_images(tree.source, [member for member, _ in tree.members["train"]], workers=2)
