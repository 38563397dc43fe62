"""Decoded data sets cached as .npy files in a user cache directory, never beside the data or repo.

An entry is a directory named after a key that changes whenever its source does (path, size and
mtime of every file it was read from, the sample limit, the cache format). It is written to a
temporary sibling and renamed into place, so a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llcompile.util.cache_dir import cache_root

# bump when the arrays written for the same source change (layout, order, dtype)
CACHE_FORMAT = 1
ARRAY_NAMES = ("train_x", "train_y", "test_x", "test_y")
META_FILE = "meta.json"

Arrays = dict[str, np.ndarray]


def file_fingerprint(path: Path) -> list:
    """Absolute path, size and mtime: enough to notice a replaced or edited file."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def cache_key(kind: str, fingerprints: list, limit: int | None) -> str:
    blob = json.dumps([CACHE_FORMAT, kind, fingerprints, limit]).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:20]}"


def cached_arrays(key: str, build: Callable[[], tuple[Arrays, dict]]) -> tuple[Arrays, dict]:
    """The arrays and metadata stored under ``key``; ``build()`` them and store them on a miss."""
    entry = cache_root() / key
    stored = _read_entry(entry)
    if stored is not None:
        return stored
    arrays, meta = build()
    try:
        _write_entry(entry, arrays, meta)
    except OSError as error:
        # a read-only or full cache costs a decode next time, not this run
        warnings.warn(f"cannot cache decoded data in {entry.parent}: {error}", stacklevel=2)
    return arrays, meta


def _read_entry(entry: Path) -> tuple[Arrays, dict] | None:
    try:
        meta = json.loads((entry / META_FILE).read_text())
        arrays = {name: np.load(entry / f"{name}.npy") for name in ARRAY_NAMES}
    except (OSError, ValueError):
        # absent, or damaged by something outside llcompile: decode again
        return None
    return arrays, meta


def _write_entry(entry: Path, arrays: Arrays, meta: dict) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for name in ARRAY_NAMES:
            np.save(tmp / f"{name}.npy", arrays[name])
        (tmp / META_FILE).write_text(json.dumps(meta))
        if entry.exists():
            # a damaged entry (the reader refused it) is replaced
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            # another process stored the same entry first; theirs is as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
