"""``llcompile.fit``: train a Program (or its directory) on data a Python caller holds, in one call."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import onnx

from llcompile.backends.base import OptimizerConfig
from llcompile.data.in_memory import IN_MEMORY, in_memory_splits
from llcompile.errors import LLCompileError
from llcompile.program.program import Program
from llcompile.train.config import TrainConfig
from llcompile.train.loop import train


@dataclass
class FitResult:
    """What ``fit`` trained: the metrics of every epoch (``llcompile train``'s metrics.jsonl records),
    the trained model (the eval model with the trained weights) in memory, and where the run was
    written when ``run_dir`` was given."""

    history: list[dict]
    model: onnx.ModelProto
    run_dir: Path | None

    @property
    def test_accuracy(self) -> float:
        return self.history[-1]["test_acc"]


def fit(program: Program | str | os.PathLike, data: Any, run_dir: str | os.PathLike | None = None, *,
        optimizer: str | OptimizerConfig = "sgd", force: bool = False, show_progress: bool = False,
        **options) -> FitResult:
    """Train ``program`` on ``data``: a spec string (``"digits"``, ``"cifar10:PATH"``, as ``llcompile
    train --data``) or a pair ``(train, test)``, each ``(x, y)`` numpy arrays, a torch ``Dataset`` or a
    ``DataLoader``. ``options`` are ``TrainConfig``'s (``epochs``, ``batch_size``, ``lr``, ``backend``,
    ``device``, ``seed``, ...); ``optimizer`` a name or an ``OptimizerConfig``. Without ``run_dir`` the
    run is written to a temporary folder that is removed afterwards; with it, as ``llcompile train``
    writes it (``force`` replaces a run there)."""
    unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)} - {"data"})
    if unknown or "data" in options:
        raise LLCompileError(f"fit takes no option {', '.join(unknown or ['data'])} (the data is its second argument)")
    splits = None
    if isinstance(data, str):
        spec = data
    elif isinstance(data, tuple) and len(data) == 2:
        spec, splits = IN_MEMORY, in_memory_splits(*data)
    else:
        raise LLCompileError("fit's data is a spec string ('digits', 'cifar10:PATH', ...) or a pair (train, test)")
    if isinstance(optimizer, str):
        optimizer = OptimizerConfig(name=optimizer)
    config = TrainConfig(data=spec, optimizer=optimizer, **options)
    with tempfile.TemporaryDirectory(prefix="llcompile-fit-") as scratch:
        program_dir = program
        if isinstance(program, Program):
            program_dir = program.save(Path(scratch) / "program")
        where = Path(run_dir) if run_dir is not None else Path(scratch) / "run"
        result = train(program_dir, config, where, force=force, show_progress=show_progress, data=splits)
        model = onnx.load(result.trained_model)
    return FitResult(history=result.history, model=model, run_dir=Path(run_dir) if run_dir is not None else None)
