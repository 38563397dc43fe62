"""Model zoo: CIFAR-style classifiers and their ONNX export."""

from .onnx_export import export
from .registry import build, list_models

__all__ = ["build", "export", "list_models"]
