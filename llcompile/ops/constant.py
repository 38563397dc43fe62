"""Constants and shapes: Constant (folded into its consumers), ConstantOfShape, Shape: the shape
arithmetic exporters write for ``x.view(x.size(0), -1)`` and ``token.expand(x.shape[0], -1, -1)``."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch
from torch import Tensor, fx

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import number, torch_dtype
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Role, no_macs, register
from llcompile.ops.torch_builder import TorchBuilder


def _constant_value(node: ir.Node) -> np.ndarray:
    attr = next(iter(node.attributes.values()))
    if attr.name == "value":
        return attr.as_tensor().numpy()
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if attr.name not in dtypes:
        raise LLCompileError(f"Constant {node.name!r}: a {attr.name!r} constant is not supported")
    return np.array(attr.value, dtype=dtypes[attr.name])


def _constant(g: TorchBuilder, node: ir.Node) -> None:
    # folded: consumers read its value like an initializer's
    g.fold(node.outputs[0], _constant_value(node))


def onnx_constant_of_shape(shape: Tensor, value: float, dtype: torch.dtype) -> Tensor:
    """ONNX ConstantOfShape for a shape computed at run time. Generated code calls it."""
    return torch.full(shape.tolist(), value, dtype=dtype, device=shape.device)


def _constant_of_shape(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(-1) if attr is not None else np.zeros(1, np.float32)
    dtype = torch_dtype(value)
    return g.call(onnx_constant_of_shape, g.x(node, 0), number(value[0].item()), dtype)


def onnx_shape(x: Tensor, start: int, end: int) -> Tensor:
    """ONNX Shape: dims ``start:end`` of ``x`` as an int64 tensor on ``x``'s device. Generated code calls it."""
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


def _shape(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    rank = g.rank(node.inputs[0])
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", rank)
    return g.call(onnx_shape, g.x(node), int(start), int(end))


register(OpFacts("Constant", Role.STRUCTURAL, _constant, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
register(OpFacts("ConstantOfShape", Role.STRUCTURAL, _constant_of_shape, no_macs, ElementOps.NONE,
                 Backward(Keeps.NOTHING)))
register(OpFacts("Shape", Role.STRUCTURAL, _shape, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
