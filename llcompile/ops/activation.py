"""Activations: Relu, LeakyRelu, PRelu, Clip, Sigmoid, Tanh, Elu, HardSigmoid, HardSwish, Softplus,
Gelu (opset 20, or its Erf form), Erf, Softmax, LogSoftmax.

ORT decompositions: onnxruntime-training 1.19 has no gradient builder for HardSigmoid, HardSwish,
PRelu, Elu and Softplus, and its Gelu gradient is the exact one's whatever ``approximate`` says.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import fx

from llcompile.ops.attributes import choice, float_attr
from llcompile.ops.onnx_nodes import float_attribute, op_node, scalar_node
from llcompile.ops.registry import (MASK_BYTES, MAX_OPSET, Backward, ElementOps, Keeps, OpFacts, OpsetRange, Role,
                                    SavedTensors, no_macs, register)
from llcompile.ops.torch_builder import Emitter, TorchBuilder

HARD_SWISH_ALPHA = 1.0 / 6.0  # ONNX HardSwish is x * HardSigmoid(x; alpha=1/6, beta=0.5)
HARD_SWISH_BETA = 0.5
GELU_TANH_CUBIC = 0.044715


def _unary(function: Callable) -> Emitter:
    return lambda g, node: function(g.x(node))


def _activation(op_type: str, emitter: Emitter, backward: Backward, **facts) -> None:
    """Register an element-wise activation: one element operation per output element, no MACs."""
    register(OpFacts(op_type, Role.ELEMENTWISE, emitter, no_macs, ElementOps.PER_OUTPUT, backward, **facts))


# ---- Relu, Sigmoid, Tanh, LeakyRelu, Clip


def _leaky_relu(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return F.leaky_relu(g.x(node), float_attr(node, "alpha", 0.01))


def _clip(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    if "min" in node.attributes or "max" in node.attributes:  # opset < 11
        low, high = (float_attr(node, name, 0.0) if name in node.attributes else None for name in ("min", "max"))
    elif any(g.input(node, i) is not None and g.array(g.input(node, i)) is None for i in (1, 2)):
        # computed bounds: torch.clamp takes tensors only for both at once
        low, high = (g.x(node, i) if g.input(node, i) is not None else None for i in (1, 2))
    else:
        low, high = (g.scalar(node, i, "min/max") for i in (1, 2))
    return torch.clamp(g.x(node), low, high)


_activation("Relu", _unary(torch.relu), Backward(Keeps.OUTPUT))
_activation("Sigmoid", _unary(torch.sigmoid), Backward(Keeps.OUTPUT))
_activation("Tanh", _unary(torch.tanh), Backward(Keeps.OUTPUT))
_activation("LeakyRelu", _leaky_relu, Backward(Keeps.INPUT))
_activation("Clip", _clip, Backward(Keeps.INPUT))


# ---- PRelu, Elu, Softplus: written with Min(x, 0) = x - Relu(x) for ORT


def _relu_and_negative_part(x: ir.Value) -> list[ir.Node]:
    """``Relu(x)`` and ``Min(x, 0)`` as ``x - Relu(x)``: its gradient at 0 is 1 (ORT's Relu gradient
    there is 0), as torch's PReLU and ELU take the negative branch's slope at 0."""
    relu = ir.Node("", "Relu", [x])
    return [relu, ir.Node("", "Sub", [x, relu.outputs[0]])]


def _prelu(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    # The slope broadcasts like ONNX's ([C, 1, 1], [1], ...); F.prelu wants it 1-D along dim 1.
    x = g.x(node)
    return torch.where(x < 0, x * g.x(node, 1), x)


def _prelu_sign_mask(node: ir.Node, saved: SavedTensors) -> None:
    saved.keep("sign mask", saved.value_bytes(node.inputs[0], MASK_BYTES))


def decompose_prelu(node: ir.Node) -> list[ir.Node]:
    """``Relu(x) + slope * Min(x, 0)``; the slope input stays what it was (a trainable parameter)."""
    relu, negative = _relu_and_negative_part(node.inputs[0])
    sloped = ir.Node("", "Mul", [node.inputs[1], negative.outputs[0]])
    return [relu, negative, sloped, ir.Node("", "Add", [relu.outputs[0], sloped.outputs[0]])]


def _elu(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return F.elu(g.x(node), float_attr(node, "alpha", 1.0))


def decompose_elu(node: ir.Node) -> list[ir.Node]:
    """``Relu(x) + alpha * (Exp(Min(x, 0)) - 1)``: the second term is exactly 0 for x > 0, and Exp
    never sees a positive x, so a large x cannot make inf (and inf * 0 = nan in the gradient)."""
    x = node.inputs[0]
    relu, negative = _relu_and_negative_part(x)
    one, alpha = scalar_node(1.0, x), scalar_node(float_attribute(node, "alpha", 1.0), x)
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
    one = scalar_node(1.0, x)
    exp = ir.Node("", "Exp", [minus_abs.outputs[0]])
    one_plus = ir.Node("", "Add", [one.outputs[0], exp.outputs[0]])
    log = ir.Node("", "Log", [one_plus.outputs[0]])
    return [relu, negative, minus_abs, one, exp, one_plus, log, ir.Node("", "Add", [relu.outputs[0], log.outputs[0]])]


_activation("PRelu", _prelu, Backward(Keeps.INPUT, _prelu_sign_mask), ort_rewrite=decompose_prelu)
_activation("Elu", _elu, Backward(Keeps.INPUT), ort_rewrite=decompose_elu)
_activation("Softplus", _unary(F.softplus), Backward(Keeps.INPUT), ort_rewrite=decompose_softplus)


# ---- HardSigmoid, HardSwish: Clip(alpha * x + beta, 0, 1) for ORT


def _hard_sigmoid(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    # ONNX's default alpha is 0.2, torch's hardsigmoid fixes 1/6: write the formula.
    alpha, beta = float_attr(node, "alpha", 0.2), float_attr(node, "beta", 0.5)
    return torch.clamp(g.x(node) * alpha + beta, 0.0, 1.0)


def _hard_sigmoid_clamp_input(node: ir.Node, saved: SavedTensors) -> None:
    # clamp(x * alpha + beta): the clamp keeps its own input
    saved.keep("clamp input", saved.value_bytes(node.inputs[0]))


def _hard_sigmoid_nodes(x: ir.Value, alpha: float, beta: float) -> list[ir.Node]:
    """``Clip(alpha * x + beta, 0, 1)``: ORT has gradients for Mul, Add and Clip."""
    alpha_c, beta_c, low, high = (scalar_node(v, x) for v in (alpha, beta, 0.0, 1.0))
    scaled = ir.Node("", "Mul", [x, alpha_c.outputs[0]])
    shifted = ir.Node("", "Add", [scaled.outputs[0], beta_c.outputs[0]])
    clipped = ir.Node("", "Clip", [shifted.outputs[0], low.outputs[0], high.outputs[0]])
    return [alpha_c, beta_c, low, high, scaled, shifted, clipped]


def decompose_hard_sigmoid(node: ir.Node) -> list[ir.Node]:
    return _hard_sigmoid_nodes(node.inputs[0], float_attribute(node, "alpha", 0.2),
                               float_attribute(node, "beta", 0.5))


def decompose_hard_swish(node: ir.Node) -> list[ir.Node]:
    gate = _hard_sigmoid_nodes(node.inputs[0], HARD_SWISH_ALPHA, HARD_SWISH_BETA)
    return [*gate, ir.Node("", "Mul", [node.inputs[0], gate[-1].outputs[0]])]


_activation("HardSigmoid", _hard_sigmoid, Backward(Keeps.NOTHING, _hard_sigmoid_clamp_input),
            ort_rewrite=decompose_hard_sigmoid)
_activation("HardSwish", _unary(F.hardswish), Backward(Keeps.INPUT), ort_rewrite=decompose_hard_swish)


# ---- Gelu (opset 20) and Erf, its exporters' form before

_GELU_APPROXIMATIONS = {"none": "none", "tanh": "tanh"}


def _gelu(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return F.gelu(g.x(node), approximate=choice(node, "approximate", "none", _GELU_APPROXIMATIONS))


def decompose_gelu(node: ir.Node) -> list[ir.Node]:
    """``0.5 * x * (1 + Erf(x / sqrt 2))``, or with approximate="tanh" ``0.5 * x * (1 + Tanh(sqrt(2/pi)
    * (x + 0.044715 x^3)))``. ORT's gradient of Gelu is the exact one's whatever ``approximate`` says,
    so the tanh form needs this rewrite; the exact form takes it too, to keep one path."""
    x = node.inputs[0]
    approximate = node.attributes.get("approximate")
    half, one = scalar_node(0.5, x), scalar_node(1.0, x)
    if approximate is not None and approximate.as_string() == "tanh":
        cubic_c, scale_c = scalar_node(GELU_TANH_CUBIC, x), scalar_node(math.sqrt(2 / math.pi), x)
        square = op_node("Mul", x, x)
        cube = op_node("Mul", square.outputs[0], x)
        cube_term = op_node("Mul", cube.outputs[0], cubic_c.outputs[0])
        inner = op_node("Add", x, cube_term.outputs[0])
        scaled = op_node("Mul", inner.outputs[0], scale_c.outputs[0])
        gate = op_node("Tanh", scaled.outputs[0])
        nodes = [cubic_c, scale_c, square, cube, cube_term, inner, scaled, gate]
    else:
        inv_sqrt2 = scalar_node(1 / math.sqrt(2), x)
        scaled = op_node("Mul", x, inv_sqrt2.outputs[0])
        gate = op_node("Erf", scaled.outputs[0])
        nodes = [inv_sqrt2, scaled, gate]
    plus_one = op_node("Add", gate.outputs[0], one.outputs[0])
    half_x = op_node("Mul", x, half.outputs[0])
    return [half, one, *nodes, plus_one, half_x, op_node("Mul", half_x.outputs[0], plus_one.outputs[0])]


_activation("Gelu", _gelu, Backward(Keeps.INPUT), ort_rewrite=decompose_gelu, opsets=OpsetRange(20, MAX_OPSET))
_activation("Erf", _unary(torch.erf), Backward(Keeps.INPUT))


# ---- Softmax, LogSoftmax (any axis, e.g. attention's last axis of [N, heads, T, T])


def _softmax(function: Callable) -> Emitter:
    return lambda g, node: function(g.x(node), int(node.attributes.get_int("axis", -1)))


_activation("Softmax", _softmax(torch.softmax), Backward(Keeps.OUTPUT), probabilities=True)
_activation("LogSoftmax", _softmax(torch.log_softmax), Backward(Keeps.OUTPUT), probabilities=True)
