"""Where llcompile caches what it derives (decoded data sets, onnxruntime training artifacts): a user
cache directory, never beside the data, the model or the repository."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LLCOMPILE_CACHE") or Path.home() / ".cache" / "llcompile")
