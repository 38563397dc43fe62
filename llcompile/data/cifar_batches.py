"""The CIFAR-10 python batches (``cifar-10-batches-py``): pickled dicts of uint8 rows and labels,
read with an unpickler that admits nothing else.

Each ``data_batch_N`` / ``test_batch`` holds ``b"data"`` (uint8 [n, 3072]: the red, green and blue
32x32 planes of one image per row) and ``b"labels"``; ``batches.meta`` names the classes.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np

from llcompile.errors import DataError
from llcompile.util.paths import inside

IMAGE_SHAPE = (3, 32, 32)
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
TRAIN_FILE = re.compile(r"data_batch_(\d+)")


def is_python_batches(folder: Path) -> bool:
    return (folder / TEST_FILE).is_file() or bool(train_files(folder))


def train_files(folder: Path) -> list[Path]:
    """data_batch_1, data_batch_2, ... in numeric order."""
    numbered = {int(match[1]): path for path in folder.iterdir() if (match := TRAIN_FILE.fullmatch(path.name))}
    return [numbered[number] for number in sorted(numbered)]


def batch_files(folder: Path) -> list[Path]:
    """Every file the data is read from (for the cache key); a missing one is reported here."""
    files = train_files(folder)
    if not files:
        raise DataError(f"{folder} has no data_batch_N files (a cifar-10-batches-py folder needs them)")
    if not (folder / TEST_FILE).is_file():
        raise DataError(f"{folder} has no {TEST_FILE} (a cifar-10-batches-py folder needs it)")
    meta = [folder / META_FILE] if (folder / META_FILE).is_file() else []
    return [*files, folder / TEST_FILE, *meta]


def read_python_batches(folder: Path, limit: int | None) -> tuple[dict[str, np.ndarray], dict]:
    """uint8 [N, 3, 32, 32] images and int64 labels per split, reading no more batches than ``limit`` needs."""
    train_x, train_y = _read_batches(train_files(folder), limit)
    test_x, test_y = _read_batches([folder / TEST_FILE], limit)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    return arrays, {"num_classes": _class_count(folder, train_y, test_y)}


def _read_batches(paths: list[Path], limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    images, labels, count = [], [], 0
    for path in paths:
        if limit is not None and count >= limit:
            break
        x, y = _read_batch(path)
        images.append(x)
        labels.append(y)
        count += len(y)
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    row = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row or len(data) != len(labels):
        raise DataError(
            f"{path}: b'data' is {data.dtype} {list(data.shape)} for {len(labels)} labels, "
            f"expected uint8 [{len(labels)}, {row}]"
        )
    return data.reshape(len(data), *IMAGE_SHAPE), labels


# Every global a CIFAR batch refers to: numpy arrays and dtypes (as numpy 1 and 2, pickle protocols
# 2 to 5 write them) and bytes (protocol 2 writes them through _codecs.encode). Dicts, lists, bytes,
# str and numbers need no global.
_BATCH_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class _RefusedGlobal(Exception):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """Builds only the containers, bytes, str, numbers and numpy arrays a CIFAR batch holds; any
    other class or function (what a pickle would call to run code) is refused."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _BATCH_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> object:
    inside(path.parent, path.name, "the batch file")
    try:
        with open(path, "rb") as file:
            return _BatchUnpickler(file, encoding="bytes").load()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from None
    except _RefusedGlobal as refused:
        raise DataError(f"{path} is not a CIFAR-10 batch: it refers to {refused}, which a batch never holds "
                        "(refused: loading it could run code)") from None
    except Exception as error:  # unpickling damaged bytes can raise almost any exception type
        raise DataError(f"{path} is not a readable pickle: {error}") from None


def _class_count(folder: Path, *labels: np.ndarray) -> int:
    """From batches.meta's label names when present (a limited read may miss classes), else the labels."""
    meta_path = folder / META_FILE
    if meta_path.is_file():
        meta = _unpickle(meta_path)
        if isinstance(meta, dict) and b"label_names" in meta:
            return len(meta[b"label_names"])
    return int(max(int(y.max(initial=-1)) for y in labels)) + 1
