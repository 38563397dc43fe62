"""Joining and picking: Concat, Slice, Split, Gather."""

from __future__ import annotations

import math

import onnx_ir as ir
import torch
from torch import Tensor, fx

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import ints_attr
from llcompile.ops.registry import (INDEX_BYTES, Backward, ElementOps, Keeps, OpFacts, Role, SavedTensors, no_macs,
                                    register)
from llcompile.ops.torch_builder import TorchBuilder


def _concat(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return torch.cat([g.x(node, i) for i in range(len(node.inputs))], int(node.attributes.get_int("axis")))


def _slice(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    rank = g.rank(node.inputs[0])
    starts, ends = g.ints(node, 1, "starts"), g.ints(node, 2, "ends")
    axes = g.ints(node, 3, "axes") or list(range(len(starts)))
    steps = g.ints(node, 4, "steps") or [1] * len(starts)
    if any(step < 0 for step in steps):
        raise LLCompileError(f"Slice {node.name!r}: negative steps are not supported (torch has none)")
    x = g.x(node)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        # aten's slice clamps the bounds and counts negative ones from the end, as ONNX does
        x = g.call(torch.ops.aten.slice.Tensor, x, axis % rank, start, end, step)
    return x


def _split(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    x_value = node.inputs[0]
    axis = int(node.attributes.get_int("axis", 0)) % g.rank(x_value)
    sizes = g.ints(node, 1, "split")
    if sizes is None:
        sizes = ints_attr(node, "split", [])  # opset < 13
    if not sizes:  # equal parts; with num_outputs (opset 18) the last may be smaller, as in torch
        size = x_value.shape[axis]
        if not isinstance(size, int):
            raise LLCompileError(f"Split {node.name!r}: the split dimension must be static")
        sizes = -(-size // len(node.outputs))
    parts = torch.split(g.x(node), sizes, axis)
    for i, value in enumerate(node.outputs[1:], start=1):
        g.bind(value, parts[i])
    return parts[0]


def onnx_gather(data: Tensor, indices: Tensor, axis: int) -> Tensor:
    """ONNX Gather: negative indices count from the end; the result has shape
    ``data.shape[:axis] + indices.shape + data.shape[axis + 1:]``. Generated code calls it."""
    axis = axis % data.dim()
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    picked = torch.index_select(data, axis, indices.reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


def _gather(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return g.call(onnx_gather, g.x(node, 0), g.x(node, 1), int(node.attributes.get_int("axis", 0)))


def _gathered_indices(node: ir.Node, saved: SavedTensors) -> None:
    """index_select keeps its (non-negative) indices, made per call."""
    indices = node.inputs[1]
    count = math.prod(indices.shape) if indices.shape is not None else 1
    saved.keep("indices", count * INDEX_BYTES)


register(OpFacts("Concat", Role.STRUCTURAL, _concat, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
register(OpFacts("Slice", Role.STRUCTURAL, _slice, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
register(OpFacts("Split", Role.STRUCTURAL, _split, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING),
                 torch_all_outputs=True))
register(OpFacts("Gather", Role.STRUCTURAL, _gather, no_macs, ElementOps.NONE,
                 Backward(Keeps.NOTHING, _gathered_indices)))
