import os
import tempfile
from pathlib import Path

import onnx
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def save_model(tmp_path):
    """Write a ModelProto into the test's temp dir and return its path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save_model(model, path)
        return path

    return save


@pytest.fixture(scope="session")
def zoo_file(tmp_path_factory):
    """Export a zoo model once per session: zoo_file(name, mode="training", input_shape=...)."""
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(name: str, mode: str = "training", input_shape=(3, 32, 32), num_classes: int = 10) -> Path:
        import torch

        from llcompile.models import export

        key = (name, mode, tuple(input_shape), num_classes)
        if key not in cache:
            torch.manual_seed(0)
            path = root / f"{name}_{mode}_{'x'.join(map(str, input_shape))}_{num_classes}.onnx"
            export(name, path, num_classes=num_classes, input_shape=tuple(input_shape), mode=mode)
            cache[key] = path
        return cache[key]

    return get


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    # decoded data and ORT artifacts go to a cache of this test session, not the user's
    os.environ["LLCOMPILE_CACHE"] = tempfile.mkdtemp(prefix="llcompile-test-cache-")
