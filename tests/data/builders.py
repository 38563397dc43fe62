"""Tiny CIFAR-like data sets in all three layouts, holding the same images in the same order.

Images are listed in round-robin class order (the order llcompile gives an image-folder tree), so
the python batches hold them in that order too and every layout must load to identical arrays.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "bird", "cat"]  # label = index in the sorted folder names
TRAIN_PER_CLASS = 7
TEST_PER_CLASS = 3


@dataclass
class TinyCifar:
    train_x: np.ndarray  # uint8 [N, 3, 32, 32]
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def image_files(tiny: TinyCifar, extension: str = "png") -> dict[str, np.ndarray]:
    """Relative path in the tree -> HWC image, file i of a class being its i-th image in that class."""
    files = {}
    for split, xs, ys in (("train", tiny.train_x, tiny.train_y), ("test", tiny.test_x, tiny.test_y)):
        for label in range(len(CLASSES)):
            for index, image in enumerate(xs[ys == label]):
                files[f"{split}/{CLASSES[label]}/{index:04d}.{extension}"] = image.transpose(1, 2, 0)
    return files


def write_tree(root: Path, tiny: TinyCifar, extension: str = "png") -> Path:
    for relative, image in image_files(tiny, extension).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


def write_zip(path: Path, tree: Path, top_folder: str | None = None) -> Path:
    prefix = f"{top_folder}/" if top_folder else ""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(tree.rglob("*")):
            archive.write(file, prefix + file.relative_to(tree).as_posix())
    return path


def write_python_batches(folder: Path, tiny: TinyCifar, train_batches: int = 2) -> Path:
    folder.mkdir(parents=True)
    rows = np.array_split(np.arange(len(tiny.train_y)), train_batches)
    for number, part in enumerate(rows, start=1):
        write_pickle(folder / f"data_batch_{number}", batch_dict(tiny.train_x[part], tiny.train_y[part]))
    write_pickle(folder / "test_batch", batch_dict(tiny.test_x, tiny.test_y))
    write_pickle(folder / "batches.meta", {b"label_names": [name.encode() for name in CLASSES]})
    return folder


def batch_dict(x: np.ndarray, y: np.ndarray) -> dict:
    return {b"data": x.reshape(len(x), -1), b"labels": [int(label) for label in y]}


def write_pickle(path: Path, value: object) -> None:
    with open(path, "wb") as file:
        pickle.dump(value, file)


def make_tiny_cifar(seed: int = 123) -> TinyCifar:
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.tile(np.arange(len(CLASSES)), per_class)  # round-robin: 0 1 2 0 1 2 ...
        return rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8), labels.astype(np.int64)

    return TinyCifar(*split(TRAIN_PER_CLASS), *split(TEST_PER_CLASS))
