"""Checkpoints: named numpy arrays plus JSON progress, written atomically, read without pickle.

A checkpoint is one ``.npz`` file: every array of every stage's state by name, and the progress
record (epoch, step within the epoch, running sums, history) as a JSON string in ``__progress__``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llcompile.util.atomic import atomic_write
from llcompile.errors import LLCompileError

PROGRESS_KEY = "__progress__"


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray], progress: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays, **{PROGRESS_KEY: np.array(json.dumps(progress))}))


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != PROGRESS_KEY}
            progress = json.loads(str(data[PROGRESS_KEY]))
    except (OSError, ValueError, KeyError):  # object arrays (pickles) raise ValueError: refused too
        raise LLCompileError(f"{path}: not a readable llcompile checkpoint") from None
    return arrays, progress
