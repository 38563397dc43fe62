"""Fixtures: a per-test cache folder, and the tiny CIFAR-like data set in every layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.builders import TinyCifar, make_tiny_cifar, write_python_batches, write_tree, write_zip


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test caches into its own folder, never into the user's ~/.cache."""
    path = tmp_path / "llcompile-cache"
    monkeypatch.setenv("LLCOMPILE_CACHE", str(path))
    return path


@pytest.fixture
def tiny() -> TinyCifar:
    return make_tiny_cifar()


@pytest.fixture
def tree_dir(tmp_path, tiny) -> Path:
    return write_tree(tmp_path / "tree", tiny)


@pytest.fixture
def tree_zip(tmp_path, tree_dir) -> Path:
    return write_zip(tmp_path / "tree.zip", tree_dir)


@pytest.fixture
def batches_dir(tmp_path, tiny) -> Path:
    return write_python_batches(tmp_path / "cifar-10-batches-py", tiny)
