"""Checkpoints: named numpy arrays plus JSON progress, written atomically, read without pickle.

A checkpoint is one ``.npz`` file: every array of every stage's state by name, and the progress
record (epoch, step within the epoch, running sums, history) as a JSON string in ``__progress__``.
It is written to a temp file in the same folder, fsynced, then renamed, so a kill at any moment
leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llcompile.errors import LLCompileError

PROGRESS_KEY = "__progress__"


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray], progress: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{PROGRESS_KEY: np.array(json.dumps(progress))})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != PROGRESS_KEY}
            progress = json.loads(str(data[PROGRESS_KEY]))
    except (OSError, ValueError, KeyError) as exc:
        raise LLCompileError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None
    return arrays, progress


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
