"""A data folder's files are read only from inside it: a symlink out is refused with one line."""

from __future__ import annotations

import shutil

import pytest

from llcompile.data import load_dataset
from llcompile.errors import LLCompileError

SHAPE = (3, 32, 32)


def _load_error(folder) -> str:
    with pytest.raises(LLCompileError) as error:
        load_dataset(f"cifar10:{folder}", SHAPE, 3)
    return str(error.value)


def test_a_batch_symlinked_out_is_refused(batches_dir, tmp_path):
    shutil.move(batches_dir / "test_batch", tmp_path / "elsewhere")
    (batches_dir / "test_batch").symlink_to(tmp_path / "elsewhere")
    assert "leads out of the directory" in _load_error(batches_dir)


def test_an_image_symlinked_out_is_refused(tree_dir, tmp_path):
    image = next((tree_dir / "train").rglob("*.png"))
    shutil.move(image, tmp_path / "elsewhere.png")
    image.symlink_to(tmp_path / "elsewhere.png")
    assert "leads out of the directory" in _load_error(tree_dir)


def test_a_symlink_inside_the_folder_is_fine(tree_dir, tiny):
    image = next((tree_dir / "train").rglob("*.png"))
    shutil.move(image, tree_dir / "train" / ".stored.png")  # hidden: not listed itself
    image.symlink_to(tree_dir / "train" / ".stored.png")
    assert len(load_dataset(f"cifar10:{tree_dir}", SHAPE, 3).train_y) == len(tiny.train_y)
