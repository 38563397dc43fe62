"""Arithmetic and comparison: Add, Sub, Mul, Div, Sum, Pow, Sqrt, Where, Equal, Cast (Sqrt, Pow and
Where come with LayerNorm's decomposed form and attention masks)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import onnx_ir as ir
import torch
from torch import fx

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import INTEGER_TYPES, TORCH_DTYPES
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Role, no_macs, register
from llcompile.ops.torch_builder import Emitter, TorchBuilder


def _elementwise(op_type: str, emitter: Emitter, keeps: Keeps, **facts) -> None:
    """Register an element-wise op: one element operation per output element, no MACs."""
    register(OpFacts(op_type, Role.ELEMENTWISE, emitter, no_macs, ElementOps.PER_OUTPUT, Backward(keeps), **facts))


def _binary(op: Callable) -> Emitter:
    return lambda g, node: op(g.x(node, 0), g.operand(node, 1))


def _div(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    if node.outputs[0].dtype in INTEGER_TYPES:  # ONNX truncates; torch's / would give floats
        return torch.div(g.x(node, 0), g.operand(node, 1), rounding_mode="trunc")
    return g.x(node, 0) / g.operand(node, 1)


def _sum(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return functools.reduce(operator.add, (g.x(node, i) for i in range(len(node.inputs))))


def decompose_sum(node: ir.Node) -> list[ir.Node]:
    """``((x0 + x1) + x2) + ...`` for ORT, which has no gradient for Sum: Add broadcasts as Sum does."""
    inputs = list(node.inputs)
    if len(inputs) == 1:
        return [ir.Node("", "Identity", inputs)]
    adds = [ir.Node("", "Add", inputs[:2])]
    for operand in inputs[2:]:
        adds.append(ir.Node("", "Add", [adds[-1].outputs[0], operand]))
    return adds


def _pow(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return torch.pow(g.x(node), g.operand(node, 1))


def _sqrt(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return torch.sqrt(g.x(node))


def _where(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return torch.where(g.x(node, 0), g.x(node, 1), g.x(node, 2))


_elementwise("Add", _binary(operator.add), Keeps.NOTHING)
_elementwise("Sub", _binary(operator.sub), Keeps.NOTHING)
_elementwise("Mul", _binary(operator.mul), Keeps.PRODUCT_OPERANDS)
_elementwise("Div", _div, Keeps.PRODUCT_OPERANDS)
_elementwise("Sum", _sum, Keeps.NOTHING, ort_rewrite=decompose_sum)
_elementwise("Pow", _pow, Keeps.INPUT)
_elementwise("Sqrt", _sqrt, Keeps.OUTPUT)
_elementwise("Where", _where, Keeps.INPUT)  # its first input, the condition (unless a constant mask)


def _equal(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return torch.eq(g.x(node, 0), g.operand(node, 1))


def _cast(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    to = ir.DataType(node.attributes.get_int("to"))
    if to not in TORCH_DTYPES:
        raise LLCompileError(f"Cast {node.name!r}: no torch dtype for {to.name}")
    return g.x(node).to(TORCH_DTYPES[to])


# shape arithmetic (`token.expand(x.shape[0], -1, -1)` lowered through Where/Equal) and type changes:
# no element operations counted
register(OpFacts("Equal", Role.STRUCTURAL, _equal, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
register(OpFacts("Cast", Role.ELEMENTWISE, _cast, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
