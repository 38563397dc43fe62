"""Rewrite ops that onnxruntime-training has no gradient for into ops that it has.

ORT's gradient builder refuses a graph with any op missing from its registry, even one that the
rest of llcompile (the torch backend, the cost model) handles. Applied only to the graphs that
become ORT training artifacts (``backends/ort_artifacts.py``); the program's own graphs keep the
original ops. One entry of ``REWRITES`` per op: a function from the node to the nodes that
replace it, the last of which computes the node's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from llcompile.errors import LLCompileError

Rewrite = Callable[[ir.Node], list[ir.Node]]

HARD_SWISH_ALPHA = 1.0 / 6.0  # ONNX HardSwish is x * HardSigmoid(x; alpha=1/6, beta=0.5)
HARD_SWISH_BETA = 0.5


def _constant(value: float, like: ir.Value) -> ir.Node:
    """A scalar Constant node of ``like``'s element type (float32 when that is unknown)."""
    dtype = like.dtype.numpy() if like.dtype is not None else np.float32
    return ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", ir.tensor(np.array(value, dtype=dtype)))])


def _hard_sigmoid_nodes(x: ir.Value, alpha: float, beta: float) -> list[ir.Node]:
    """``Clip(alpha * x + beta, 0, 1)``: ORT has gradients for Mul, Add and Clip."""
    alpha_c, beta_c, low, high = (_constant(v, x) for v in (alpha, beta, 0.0, 1.0))
    scaled = ir.Node("", "Mul", [x, alpha_c.outputs[0]])
    shifted = ir.Node("", "Add", [scaled.outputs[0], beta_c.outputs[0]])
    clipped = ir.Node("", "Clip", [shifted.outputs[0], low.outputs[0], high.outputs[0]])
    return [alpha_c, beta_c, low, high, scaled, shifted, clipped]


def _float_attribute(node: ir.Node, name: str, default: float) -> float:
    attribute = node.attributes.get(name)
    return attribute.as_float() if attribute is not None else default


def decompose_hard_sigmoid(node: ir.Node) -> list[ir.Node]:
    return _hard_sigmoid_nodes(node.inputs[0], _float_attribute(node, "alpha", 0.2),
                               _float_attribute(node, "beta", 0.5))


def decompose_hard_swish(node: ir.Node) -> list[ir.Node]:
    gate = _hard_sigmoid_nodes(node.inputs[0], HARD_SWISH_ALPHA, HARD_SWISH_BETA)
    return [*gate, ir.Node("", "Mul", [node.inputs[0], gate[-1].outputs[0]])]


def _op(op_type: str, *inputs: ir.Value, **attributes) -> ir.Node:
    return ir.Node("", op_type, list(inputs), attributes=ir.convenience.convert_attributes(attributes))


def _ints(values: list[int]) -> ir.Node:
    return ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", ir.tensor(np.array(values, np.int64)))])


GELU_TANH_CUBIC = 0.044715


def decompose_gelu(node: ir.Node) -> list[ir.Node]:
    """``0.5 * x * (1 + Erf(x / sqrt 2))``, or with approximate="tanh" ``0.5 * x * (1 + Tanh(sqrt(2/pi)
    * (x + 0.044715 x^3)))``. ORT's gradient of Gelu is the exact one's whatever ``approximate`` says,
    so the tanh form needs this rewrite; the exact form takes it too, to keep one path."""
    x = node.inputs[0]
    approximate = node.attributes.get("approximate")
    half, one = _constant(0.5, x), _constant(1.0, x)
    if approximate is not None and approximate.as_string() == "tanh":
        cubic_c, scale_c = _constant(GELU_TANH_CUBIC, x), _constant(math.sqrt(2 / math.pi), x)
        square = _op("Mul", x, x)
        cube = _op("Mul", square.outputs[0], x)
        cube_term = _op("Mul", cube.outputs[0], cubic_c.outputs[0])
        inner = _op("Add", x, cube_term.outputs[0])
        scaled = _op("Mul", inner.outputs[0], scale_c.outputs[0])
        gate = _op("Tanh", scaled.outputs[0])
        nodes = [cubic_c, scale_c, square, cube, cube_term, inner, scaled, gate]
    else:
        inv_sqrt2 = _constant(1 / math.sqrt(2), x)
        scaled = _op("Mul", x, inv_sqrt2.outputs[0])
        gate = _op("Erf", scaled.outputs[0])
        nodes = [inv_sqrt2, scaled, gate]
    plus_one = _op("Add", gate.outputs[0], one.outputs[0])
    half_x = _op("Mul", x, half.outputs[0])
    return [half, one, *nodes, plus_one, half_x, _op("Mul", half_x.outputs[0], plus_one.outputs[0])]


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
                return [_op("Identity", x)]
            axes = list(range(rank))
        reduced = sorted(a % rank for a in axes)
        kept = [d for d in range(rank) if d not in reduced]
        perm = kept + reduced
        last, flat_shape = _op("Transpose", x, perm=perm), _ints([0] * len(kept) + [-1])  # 0 copies a dim
        flat = _op("Reshape", last.outputs[0], flat_shape.outputs[0])
        k = _ints([1])
        top = ir.Node("", "TopK", [flat.outputs[0], k.outputs[0]], num_outputs=2,
                      attributes=[ir.AttrInt64("axis", -1), ir.AttrInt64("largest", largest)])
        nodes = [last, flat_shape, flat, k, top]
        if not keepdims:
            shape = _ints([0] * len(kept))
            return [*nodes, shape, _op("Reshape", top.outputs[0], shape.outputs[0])]
        shape = _ints([0] * len(kept) + [1] * len(reduced))
        unflat = _op("Reshape", top.outputs[0], shape.outputs[0])
        inverse = [perm.index(d) for d in range(rank)]
        return [*nodes, shape, unflat, _op("Transpose", unflat.outputs[0], perm=inverse)]

    return rewrite


# op type -> rewrite; the ops that onnxruntime-training 1.19 has no (or a wrong) gradient builder for.
REWRITES: dict[str, Rewrite] = {
    "HardSigmoid": decompose_hard_sigmoid,
    "HardSwish": decompose_hard_swish,
    "Gelu": decompose_gelu,
    "ReduceMax": _reduce_extreme(largest=1),
    "ReduceMin": _reduce_extreme(largest=0),
}


class DecomposeForOrtPass(ir.passes.InPlacePass):
    """Replace every node whose op is in ``REWRITES`` (standard domain) by its decomposition."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        taken = _names(graph)
        modified = False
        for node in list(graph):
            rewrite = REWRITES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if rewrite is None:
                continue
            replacement = rewrite(node)
            _name_new_nodes(replacement, node.name or node.op_type, taken)
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], replacement, [node.outputs[0]], [replacement[-1].outputs[0]])
            modified = True
        return ir.passes.PassResult(model, modified)


def _names(graph: ir.Graph) -> set[str]:
    """Every node and value name in ``graph``: ORT refuses a repeated node name, SSA a repeated value."""
    values = [*graph.inputs, *graph.initializers.values(), *(out for node in graph for out in node.outputs)]
    return {node.name for node in graph if node.name} | {v.name for v in values if v.name}


def _name_new_nodes(nodes: list[ir.Node], base: str, taken: set[str]) -> None:
    """``base.<i>.<op>`` for each node and its output, made unique against ``taken``. The last
    node's output takes the replaced node's output name later."""
    for index, node in enumerate(nodes):
        node.name = _unique(f"{base}.{index}.{node.op_type}", taken)
        for out in node.outputs:
            out.name = _unique(f"{node.name}.out", taken)


def _unique(name: str, taken: set[str]) -> str:
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    taken.add(candidate)
    return candidate
