import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from filelock import FileLock

from tests.fixtures.cnn_graphs import CnnSpec, UnitSpec, build_cnn

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def save_model(tmp_path):
    """Write a ModelProto into the test's temp dir and return its path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save_model(model, path)
        return path

    return save


# input 3x8x8 -> conv 3x3 (3->4) + BN + ReLU -> MaxPool 2x2 -> conv 3x3 (4->8) + ReLU -> GAP -> Gemm (8->10)
TINY = CnnSpec(seed=0, in_channels=3, size=8, classes=10, units=(
    UnitSpec("conv", out_channels=4, kernel=3, bn=True, relu=True),
    UnitSpec("pool", pool="max"),
    UnitSpec("conv", out_channels=8, kernel=3, relu=True),
))


@pytest.fixture
def tiny_model(save_model):
    """The TINY CNN saved as a file (the cost model's, the report's and its command's tests)."""
    return save_model(build_cnn(TINY), "tiny.onnx")


@pytest.fixture(scope="session")
def build_once(tmp_path_factory) -> Callable[[str, Callable[[Path], object]], Path]:
    """build_once(name, build): the file or folder ``name`` that ``build(path)`` writes, built once for
    the whole run. Under pytest-xdist the workers share the run's temp root: a file lock lets one
    build while the others wait, and the result is renamed into place whole."""
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root  # a worker's is root/popen-gwN

    def get(name: str, build: Callable[[Path], object]) -> Path:
        path = shared / "built-once" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if not path.exists():
                partial = path.with_name(f".{path.name}.partial")
                shutil.rmtree(partial, ignore_errors=True)
                build(partial)
                os.replace(partial, path)
        return path

    return get


@pytest.fixture(scope="session")
def zoo_file(build_once):
    """Export a zoo model once per run: zoo_file(name, mode="training", input_shape=...)."""

    def get(name: str, mode: str = "training", input_shape=(3, 32, 32), num_classes: int = 10) -> Path:
        def export(path: Path) -> None:
            import torch

            from llcompile.models import export

            torch.manual_seed(0)
            export(name, path, num_classes=num_classes, input_shape=tuple(input_shape), mode=mode)

        return build_once(f"{name}_{mode}_{'x'.join(map(str, input_shape))}_{num_classes}.onnx", export)

    return get


@pytest.fixture(scope="session")
def tiny_vit_file(build_once):
    """tiny_vit_file(kind): (the file of tests/fixtures/attention_graphs.py's TinyViT exported in form
    ``kind``, the module it was exported from), exported once per run."""

    def get(kind: str):
        from tests.fixtures.attention_graphs import EXPORTS, export_tiny_vit, tiny_vit

        path = build_once(f"tiny_vit_{kind}.onnx", lambda p: export_tiny_vit(kind, p))
        return path, tiny_vit(gelu=EXPORTS[kind][2])

    return get


def pytest_configure(config):
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    distributing = not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"
    if not distributing:  # a process that runs tests: the cores shared among the workers
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    if hasattr(config, "workerinput"):
        return  # an xdist worker: it inherited the controller's cache below
    # decoded data and ORT artifacts go to a cache of this test run, not the user's; its entries are
    # written under temporary names and renamed into place, so the workers share it safely
    config.llcompile_cache = tempfile.mkdtemp(prefix="llcompile-test-cache-")
    os.environ["LLCOMPILE_CACHE"] = config.llcompile_cache


def pytest_unconfigure(config):
    if hasattr(config, "llcompile_cache"):
        shutil.rmtree(config.llcompile_cache, ignore_errors=True)
