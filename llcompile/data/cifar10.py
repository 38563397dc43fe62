"""``cifar10:PATH``: CIFAR-10 as python batches, an image-folder tree or a zip of one; decoded once, cached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llcompile.errors import DataError

from .cache import Arrays, cache_key, cached_arrays, file_fingerprint
from .cifar_batches import batch_files, is_python_batches, read_python_batches
from .dataset import Splits
from .decode import decode_images
from .image_tree import (
    SPLITS,
    TREE_LAYOUT,
    ImageTree,
    is_folder_tree,
    list_folder_tree,
    list_zip_tree,
    tree_fingerprints,
)

BATCHES_FOLDER = "cifar-10-batches-py"
EXPECTED_LAYOUTS = (
    f"a {BATCHES_FOLDER} folder (data_batch_1..5, test_batch), an image-folder tree "
    f"({TREE_LAYOUT}) or a zip of such a tree"
)


@dataclass
class Layout:
    """One way the data is stored: what identifies its contents, and how to decode it."""

    fingerprints: list
    read: Callable[[int | None], tuple[Arrays, dict]]


def load_cifar10(path_text: str, limit: int | None) -> Splits:
    path = Path(path_text).expanduser().resolve()
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    layout = detect_layout(path)
    arrays, meta = cached_arrays(cache_key("cifar10", layout.fingerprints, limit), lambda: layout.read(limit))
    return Splits(
        arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"],
        num_classes=meta["num_classes"], augment=True,
    )


def detect_layout(path: Path) -> Layout:
    if path.is_file():
        # a zip is identified by the file itself, so a cache hit needs no listing of its members
        return Layout([file_fingerprint(path)], lambda limit: read_image_tree(list_zip_tree(path), limit))
    for folder in (path, path / BATCHES_FOLDER):  # PATH may also be the folder torchvision downloads into
        if folder.is_dir() and is_python_batches(folder):
            fingerprints = [file_fingerprint(file) for file in batch_files(folder)]
            return Layout(fingerprints, lambda limit: read_python_batches(folder, limit))
    if is_folder_tree(path):
        tree = list_folder_tree(path)
        return Layout(tree_fingerprints(tree), lambda limit: read_image_tree(tree, limit))
    raise DataError(f"{path} is none of the CIFAR-10 layouts: expected {EXPECTED_LAYOUTS}")


def read_image_tree(tree: ImageTree, limit: int | None) -> tuple[Arrays, dict]:
    arrays = {}
    for split in SPLITS:
        entries = tree.members[split][:limit]
        arrays[f"{split}_x"] = decode_images(tree.source, [member for member, _ in entries])
        arrays[f"{split}_y"] = np.array([label for _, label in entries], dtype=np.int64)
    return arrays, {"num_classes": len(tree.classes)}
