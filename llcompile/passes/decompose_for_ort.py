"""Rewrite ops that onnxruntime-training has no gradient for into ops that it has.

ORT's gradient builder refuses a graph with any op missing from its registry, even one that the
rest of llcompile (the torch backend, the cost model) handles. Applied only to the graphs that
become ORT training artifacts (``backends/ort_artifacts.py``); the program's own graphs keep the
original ops. One entry of ``REWRITES`` per op: a function from the node to the nodes that
replace it, the last of which computes the node's output.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

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


# op type -> rewrite; the ops that onnxruntime-training 1.19 has no gradient builder for.
REWRITES: dict[str, Rewrite] = {
    "HardSigmoid": decompose_hard_sigmoid,
    "HardSwish": decompose_hard_swish,
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
