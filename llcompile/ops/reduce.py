"""Reductions: ReduceMean, ReduceMax, ReduceMin (axes an attribute, or an input from opset 18).

ORT decomposition: onnxruntime-training 1.19 has no gradient for ReduceMax/ReduceMin; they become
a TopK(k=1) (ties: TopK's gradient goes to one element, torch's ``amax`` splits it).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir
import torch
from torch import fx

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import ints_attr
from llcompile.ops.onnx_nodes import ints_node, op_node
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Rewrite, Role, no_macs, register
from llcompile.ops.torch_builder import Emitter, TorchBuilder


def _reduce(function: Callable) -> Emitter:
    def emit(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
        axes = g.ints(node, 1, "axes")  # opset >= 18
        if axes is None:
            axes = ints_attr(node, "axes", [])
        keepdims = bool(node.attributes.get_int("keepdims", 1))
        if not axes:
            if node.attributes.get_int("noop_with_empty_axes", 0):
                return g.x(node)
            axes = list(range(g.rank(node.inputs[0])))
        return function(g.x(node), axes, keepdim=keepdims)
    return emit


def _reduce_extreme(largest: int) -> Rewrite:
    """ReduceMax (largest=1) / ReduceMin (0) as TopK(k=1), which has a gradient: the reduced axes are
    moved last and flattened into one, and the result is brought back to ReduceMax's shape."""

    def rewrite(node: ir.Node) -> list[ir.Node]:
        x = node.inputs[0]
        if x.shape is None:
            raise LLCompileError(f"{node.op_type} {node.name!r}: the rank of its input is unknown")
        rank = x.shape.rank()
        axes_input = node.inputs[1] if len(node.inputs) > 1 else None  # opset >= 18
        if axes_input is not None and axes_input.const_value is None:
            raise LLCompileError(f"{node.op_type} {node.name!r}: axes must be a constant")
        attribute = node.attributes.get("axes")
        axes = (axes_input.const_value.numpy().tolist() if axes_input is not None
                else attribute.as_ints() if attribute is not None else [])
        keepdims = node.attributes.get_int("keepdims", 1)
        if not axes:
            if node.attributes.get_int("noop_with_empty_axes", 0):
                return [op_node("Identity", x)]
            axes = list(range(rank))
        reduced = sorted(a % rank for a in axes)
        kept = [d for d in range(rank) if d not in reduced]
        perm = kept + reduced
        last, flat_shape = op_node("Transpose", x, perm=perm), ints_node([0] * len(kept) + [-1])  # 0 copies a dim
        flat = op_node("Reshape", last.outputs[0], flat_shape.outputs[0])
        k = ints_node([1])
        top = ir.Node("", "TopK", [flat.outputs[0], k.outputs[0]], num_outputs=2,
                      attributes=[ir.AttrInt64("axis", -1), ir.AttrInt64("largest", largest)])
        nodes = [last, flat_shape, flat, k, top]
        if not keepdims:
            shape = ints_node([0] * len(kept))
            return [*nodes, shape, op_node("Reshape", top.outputs[0], shape.outputs[0])]
        shape = ints_node([0] * len(kept) + [1] * len(reduced))
        unflat = op_node("Reshape", top.outputs[0], shape.outputs[0])
        inverse = [perm.index(d) for d in range(rank)]
        return [*nodes, shape, unflat, op_node("Transpose", unflat.outputs[0], perm=inverse)]

    return rewrite


register(OpFacts("ReduceMean", Role.STRUCTURAL, _reduce(torch.mean), no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.NOTHING)))
register(OpFacts("ReduceMax", Role.STRUCTURAL, _reduce(torch.amax), no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.INPUT_AND_OUTPUT), ort_rewrite=_reduce_extreme(largest=1)))
register(OpFacts("ReduceMin", Role.STRUCTURAL, _reduce(torch.amin), no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.INPUT_AND_OUTPUT), ort_rewrite=_reduce_extreme(largest=0)))
