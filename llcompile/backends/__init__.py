"""Training backends: turn a Program's stage graphs into trainable stages."""

from __future__ import annotations

from llcompile.backends.base import Backend, OptimizerConfig, StepResult, TrainableStage
from llcompile.errors import LLCompileError
from llcompile.util.option_names import option_name

BACKENDS = ("torch", "ort")


def make_backend(name: str, device: str = "cpu", torch_mode: str = "eager", threads: int | None = None) -> Backend:
    """``threads``: the ort backend's threads per session (None: onnxruntime's default, every core); torch
    takes its count from ``torch.set_num_threads``, for the whole process."""
    if name == "torch":
        from llcompile.backends.torch.backend import TorchBackend

        return TorchBackend(device=device, mode=torch_mode)
    if name == "ort":
        if torch_mode != "eager":
            raise LLCompileError(f"{option_name('torch_mode')} applies to the torch backend only")
        from llcompile.backends.ort.backend import OrtBackend

        return OrtBackend(device=device, threads=threads or 0)
    raise LLCompileError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "OptimizerConfig", "StepResult", "TrainableStage", "make_backend"]
