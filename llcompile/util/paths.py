"""Paths named inside a directory that came from elsewhere (a program or run directory)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from llcompile.errors import LLCompileError


def inside(root: Path, relative: object, what: str) -> Path:
    """``root / relative``, refused with a one-line error unless it stays inside ``root``: no
    absolute path, no ``..``, no symlink (of the file or a folder on the way) that leads out."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise LLCompileError(f"{root}: {what} {relative!r} is not a file name")
    if (PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute()
            or PureWindowsPath(relative).drive or ".." in PurePosixPath(relative.replace("\\", "/")).parts):
        raise LLCompileError(f"{root}: {what} {relative!r} is not a path inside the directory")
    base = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root / relative))
    if not target.is_relative_to(base):
        raise LLCompileError(f"{root}: {what} {relative!r} leads out of the directory (a symlink)")
    return root / relative
