"""Rewrite ops that onnxruntime-training cannot differentiate into ops that it can.

ORT's gradient builder refuses a graph with any op missing from its registry, even one that the
rest of llcompile (the torch backend, the cost model) handles, and some registered gradients
break on a symbolic batch (AveragePool). Applied only to the graphs that
become ORT training artifacts (``backends/ort_artifacts.py``); the program's own graphs keep the
original ops. One entry of ``REWRITES`` per op: a function from the node to the nodes that
replace it, the last of which computes the node's outputs (its first ones, if it has more).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from llcompile.errors import LLCompileError
from llcompile.frontend.naming import NameScope
from llcompile.backends.ort.average_pool_as_conv import decompose_average_pool
from llcompile.frontend.graph_builder import constant_node, element_dtype

Rewrite = Callable[[ir.Node], list[ir.Node]]

HARD_SWISH_ALPHA = 1.0 / 6.0  # ONNX HardSwish is x * HardSigmoid(x; alpha=1/6, beta=0.5)
HARD_SWISH_BETA = 0.5


def _scalar(value: float, like: ir.Value) -> ir.Node:
    """A scalar Constant node of ``like``'s element type."""
    return constant_node(np.array(value, dtype=element_dtype(like)))


def _hard_sigmoid_nodes(x: ir.Value, alpha: float, beta: float) -> list[ir.Node]:
    """``Clip(alpha * x + beta, 0, 1)``: ORT has gradients for Mul, Add and Clip."""
    alpha_c, beta_c, low, high = (_scalar(v, x) for v in (alpha, beta, 0.0, 1.0))
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
    return constant_node(np.array(values, np.int64))


GELU_TANH_CUBIC = 0.044715


def decompose_gelu(node: ir.Node) -> list[ir.Node]:
    """``0.5 * x * (1 + Erf(x / sqrt 2))``, or with approximate="tanh" ``0.5 * x * (1 + Tanh(sqrt(2/pi)
    * (x + 0.044715 x^3)))``. ORT's gradient of Gelu is the exact one's whatever ``approximate`` says,
    so the tanh form needs this rewrite; the exact form takes it too, to keep one path."""
    x = node.inputs[0]
    approximate = node.attributes.get("approximate")
    half, one = _scalar(0.5, x), _scalar(1.0, x)
    if approximate is not None and approximate.as_string() == "tanh":
        cubic_c, scale_c = _scalar(GELU_TANH_CUBIC, x), _scalar(math.sqrt(2 / math.pi), x)
        square = _op("Mul", x, x)
        cube = _op("Mul", square.outputs[0], x)
        cube_term = _op("Mul", cube.outputs[0], cubic_c.outputs[0])
        inner = _op("Add", x, cube_term.outputs[0])
        scaled = _op("Mul", inner.outputs[0], scale_c.outputs[0])
        gate = _op("Tanh", scaled.outputs[0])
        nodes = [cubic_c, scale_c, square, cube, cube_term, inner, scaled, gate]
    else:
        inv_sqrt2 = _scalar(1 / math.sqrt(2), x)
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


def _relu_and_negative_part(x: ir.Value) -> list[ir.Node]:
    """``Relu(x)`` and ``Min(x, 0)`` as ``x - Relu(x)``: its gradient at 0 is 1 (ORT's Relu gradient
    there is 0), as torch's PReLU and ELU take the negative branch's slope at 0."""
    relu = ir.Node("", "Relu", [x])
    return [relu, ir.Node("", "Sub", [x, relu.outputs[0]])]


def decompose_prelu(node: ir.Node) -> list[ir.Node]:
    """``Relu(x) + slope * Min(x, 0)``; the slope input stays what it was (a trainable parameter)."""
    relu, negative = _relu_and_negative_part(node.inputs[0])
    sloped = ir.Node("", "Mul", [node.inputs[1], negative.outputs[0]])
    return [relu, negative, sloped, ir.Node("", "Add", [relu.outputs[0], sloped.outputs[0]])]


def decompose_elu(node: ir.Node) -> list[ir.Node]:
    """``Relu(x) + alpha * (Exp(Min(x, 0)) - 1)``: the second term is exactly 0 for x > 0, and Exp
    never sees a positive x, so a large x cannot make inf (and inf * 0 = nan in the gradient)."""
    x = node.inputs[0]
    relu, negative = _relu_and_negative_part(x)
    one, alpha = _scalar(1.0, x), _scalar(_float_attribute(node, "alpha", 1.0), x)
    exp = ir.Node("", "Exp", [negative.outputs[0]])
    exp_minus_one = ir.Node("", "Sub", [exp.outputs[0], one.outputs[0]])
    scaled = ir.Node("", "Mul", [alpha.outputs[0], exp_minus_one.outputs[0]])
    return [relu, negative, one, alpha, exp, exp_minus_one, scaled,
            ir.Node("", "Add", [relu.outputs[0], scaled.outputs[0]])]


def decompose_softplus(node: ir.Node) -> list[ir.Node]:
    """``Relu(x) + Log(1 + Exp(-|x|))``, with ``-|x| = Min(x, 0) - Relu(x)``: Exp never overflows,
    and the gradient at 0 is torch's 1/2 without relying on Abs's gradient at its kink."""
    x = node.inputs[0]
    relu, negative = _relu_and_negative_part(x)
    minus_abs = ir.Node("", "Sub", [negative.outputs[0], relu.outputs[0]])
    one = _scalar(1.0, x)
    exp = ir.Node("", "Exp", [minus_abs.outputs[0]])
    one_plus = ir.Node("", "Add", [one.outputs[0], exp.outputs[0]])
    log = ir.Node("", "Log", [one_plus.outputs[0]])
    return [relu, negative, minus_abs, one, exp, one_plus, log, ir.Node("", "Add", [relu.outputs[0], log.outputs[0]])]


def decompose_lrn(node: ir.Node) -> list[ir.Node]:
    """``x / (bias + alpha / size * square_sum) ** beta``, ``square_sum`` a 1x1 Conv of ``x * x``
    with a constant band of ones: output channel c sums the squares of the input channels
    ``[c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]``, as ONNX pads the window. The band is
    a Constant node, not an initializer, so it never becomes a trainable parameter."""
    x = node.inputs[0]
    shape = x.shape
    if shape is None or len(shape) < 3 or not isinstance(shape[1], int):
        raise LLCompileError(f"LRN {node.name!r}: the ort backend needs its input's channels to be static; "
                             "use --backend torch")
    channels, size = shape[1], node.attributes.get_int("size")
    offsets = np.arange(channels)[None, :] - np.arange(channels)[:, None]  # input channel - output channel
    band = ((offsets >= -((size - 1) // 2)) & (offsets <= size // 2)).astype(element_dtype(x))
    band_node = constant_node(band.reshape(channels, channels, *[1] * (len(shape) - 2)))
    squares = ir.Node("", "Mul", [x, x])
    square_sum = ir.Node("", "Conv", [squares.outputs[0], band_node.outputs[0]])
    scale, bias, beta = (_scalar(v, x) for v in (_float_attribute(node, "alpha", 1e-4) / size,
                                                 _float_attribute(node, "bias", 1.0),
                                                 _float_attribute(node, "beta", 0.75)))
    scaled = ir.Node("", "Mul", [square_sum.outputs[0], scale.outputs[0]])
    shifted = ir.Node("", "Add", [scaled.outputs[0], bias.outputs[0]])
    power = ir.Node("", "Pow", [shifted.outputs[0], beta.outputs[0]])
    return [band_node, squares, square_sum, scale, bias, beta, scaled, shifted, power,
            ir.Node("", "Div", [x, power.outputs[0]])]


def decompose_sum(node: ir.Node) -> list[ir.Node]:
    """``((x0 + x1) + x2) + ...``: Add broadcasts as Sum does."""
    inputs = list(node.inputs)
    if len(inputs) == 1:
        return [ir.Node("", "Identity", inputs)]
    adds = [ir.Node("", "Add", inputs[:2])]
    for operand in inputs[2:]:
        adds.append(ir.Node("", "Add", [adds[-1].outputs[0], operand]))
    return adds


def dropout_with_mask(node: ir.Node) -> list[ir.Node]:
    """The same Dropout with its optional mask output, which ORT's Dropout gradient reads (without
    it, building the training graph fails on "i < node_->OutputDefs().size()")."""
    return [ir.Node("", "Dropout", list(node.inputs), attributes=list(node.attributes.values()), num_outputs=2)]


# op type -> rewrite: the ops that onnxruntime-training 1.19 has no gradient builder for, and
# AveragePool, whose gradient kernel sizes its output from the graph's static shape (see its module),
# and Dropout, whose gradient needs its mask output.
REWRITES: dict[str, Rewrite] = {
    "HardSigmoid": decompose_hard_sigmoid,
    "HardSwish": decompose_hard_swish,
    "Gelu": decompose_gelu,
    "ReduceMax": _reduce_extreme(largest=1),
    "ReduceMin": _reduce_extreme(largest=0),
    "PRelu": decompose_prelu,
    "Elu": decompose_elu,
    "Softplus": decompose_softplus,
    "LRN": decompose_lrn,
    "Sum": decompose_sum,
    "Dropout": dropout_with_mask,
    "AveragePool": decompose_average_pool,
}


class DecomposeForOrtPass(ir.passes.InPlacePass):
    """Replace every node whose op is in ``REWRITES`` (standard domain) by its decomposition."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameScope(graph)
        modified = False
        for node in list(graph):
            rewrite = REWRITES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if rewrite is None:
                continue
            replacement = rewrite(node)
            _name_new_nodes(replacement, node.name or node.op_type, names)
            outputs = list(node.outputs)
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], replacement, outputs, list(replacement[-1].outputs[:len(outputs)]))
            modified = True
        return ir.passes.PassResult(model, modified)


def _name_new_nodes(nodes: list[ir.Node], base: str, names: NameScope) -> None:
    """``base.<i>.<op>`` for each node and its outputs, unused in the graph (ORT refuses a repeated
    node name). The last node's outputs then take the replaced node's output names."""
    for index, node in enumerate(nodes):
        node.name = names.fresh(f"{base}.{index}.{node.op_type}")
        for out in node.outputs:
            out.name = names.fresh(f"{node.name}.out")
