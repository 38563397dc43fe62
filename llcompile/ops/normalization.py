"""Normalisation: BatchNormalization, LayerNormalization (opset 17, or decomposed), LRN."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import onnx_ir as ir
import torch.nn.functional as F
from torch import Tensor, fx, nn

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import decimal_float, float_attr, torch_dtype
from llcompile.ops.onnx_nodes import constant_node, element_dtype, float_attribute, scalar_node
from llcompile.ops.registry import (FLOAT_BYTES, MAX_OPSET, Backward, ElementOps, Keeps, OpFacts, OpsetRange, Role,
                                    SavedTensors, no_macs, register)
from llcompile.ops.torch_builder import TorchBuilder

# ---- BatchNormalization


class SharedBatchNorm(nn.Module):
    """BatchNormalization over statistics and affine tensors that other nodes use too (the
    module passes them in): batch statistics in ``train()``, running statistics in ``eval()``."""

    def __init__(self, momentum: float, eps: float):
        super().__init__()
        self.momentum = momentum
        self.eps = eps

    def forward(self, x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor,
                bias: Tensor) -> Tensor:
        return F.batch_norm(x, running_mean, running_var, weight, bias, self.training, self.momentum, self.eps)


def _batch_norm(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    scale, bias, mean, var = node.inputs[1:5]
    if any(g.array(v) is None for v in (scale, bias, mean, var)):
        raise LLCompileError(
            f"BatchNormalization {node.name!r}: scale, bias, mean and variance must be initializers")
    eps = decimal_float(node.attributes.get_float("epsilon", 1e-5))
    # ONNX keeps `momentum` of the running value, torch mixes in `momentum` of the batch's:
    # 0.9 there is 0.1 here, subtracted in decimal so that it is exactly torch's 0.1.
    onnx_momentum = Decimal(str(np.float32(node.attributes.get_float("momentum", 0.9))))
    momentum = float(Decimal(1) - onnx_momentum)
    x = g.x(node)
    if not g.exclusive(node):  # shared statistics: the functional form updates them in place
        return g.own(SharedBatchNorm(momentum, eps))(x, *(g.tensor(v) for v in (mean, var, scale, bias)))
    rank = g.rank(node.inputs[0])
    if rank not in (2, 3, 4, 5):
        raise LLCompileError(f"BatchNormalization {node.name!r}: rank-{rank} input is not supported")
    bn_class = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
    channels = g.array(scale).shape[0]
    bn = bn_class(channels, eps=eps, momentum=momentum, dtype=torch_dtype(g.array(scale)))
    return g.own(bn, weight=scale, bias=bias, running_mean=mean, running_var=var)(x)


def _batch_statistics(node: ir.Node, saved: SavedTensors) -> None:
    scale = node.inputs[1]
    channels = scale.shape[0] if scale.shape is not None else 0
    saved.keep("batch mean and inverse std", 2 * channels * FLOAT_BYTES)


register(OpFacts("BatchNormalization", Role.ELEMENTWISE, _batch_norm, no_macs, ElementOps.PER_OUTPUT,
                 Backward(Keeps.INPUT, _batch_statistics)))

# ---- LayerNormalization


def _layer_norm(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    x_value, scale, bias = node.inputs[0], g.input(node, 1), g.input(node, 2)
    rank = g.rank(x_value)
    axis = int(node.attributes.get_int("axis", -1)) % rank
    normalized = list(x_value.shape)[axis:]
    if not all(isinstance(d, int) for d in normalized):
        raise LLCompileError(f"LayerNormalization {node.name!r}: the normalized dims {normalized} must be static")
    eps = decimal_float(node.attributes.get_float("epsilon", 1e-5))
    w, b = g.array(scale), g.array(bias)
    fits_module = w is not None and list(w.shape) == normalized and (
        bias is None or (b is not None and list(b.shape) == normalized))
    if fits_module and g.exclusive(node):
        layer_norm = nn.LayerNorm(normalized, eps=eps, bias=bias is not None, dtype=torch_dtype(w))
        return g.own(layer_norm, weight=scale, bias=bias)(g.x(node))
    # a scale or bias shared with other nodes, or computed
    return F.layer_norm(g.x(node), normalized, g.x(node, 1), g.x(node, 2) if bias is not None else None, eps)


def _row_statistics(node: ir.Node, saved: SavedTensors) -> None:
    """A mean and an inverse std per normalized row."""
    x = node.inputs[0]
    rank = x.shape.rank() if x.shape is not None else 1
    axis = node.attributes.get_int("axis", -1) % rank
    rows = math.prod(list(x.shape)[1:axis]) if x.shape is not None else 1
    saved.keep("mean and inverse std", 2 * rows * saved.batch_size * FLOAT_BYTES)


register(OpFacts("LayerNormalization", Role.ELEMENTWISE, _layer_norm, no_macs, ElementOps.PER_OUTPUT,
                 Backward(Keeps.INPUT, _row_statistics), opsets=OpsetRange(17, MAX_OPSET)))

# ---- LRN


def onnx_lrn(x: Tensor, size: int, alpha: float, beta: float, bias: float) -> Tensor:
    """ONNX LRN: ``x / (bias + alpha / size * sum_sq) ** beta``, ``sum_sq`` over the channels
    ``[c - (size - 1) // 2, c + size // 2]``. Generated code calls it.

    ``F.local_response_norm`` computes the same for odd sizes, but centres an even-sized window
    one channel lower (``[c - size // 2, c + (size - 1) // 2]``), so the window is built here.
    """
    squares = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)  # channels become a pooling axis
    squares = F.pad(squares, [0, 0, (size - 1) // 2, size // 2])
    mean_square = F.avg_pool2d(squares, [size, 1], stride=1).reshape(x.shape)
    return x / (bias + alpha * mean_square) ** beta


def _lrn(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    size = node.attributes.get_int("size")
    alpha, beta, bias = (float_attr(node, name, default) for name, default in
                         (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    return g.call(onnx_lrn, g.x(node), int(size), alpha, beta, bias)


def _squares_and_base(node: ir.Node, saved: SavedTensors) -> None:
    """The padded squares and the power's base."""
    saved.keep("squares and base", 2 * saved.value_bytes(node.inputs[0]))


def decompose_lrn(node: ir.Node) -> list[ir.Node]:
    """``x / (bias + alpha / size * square_sum) ** beta``, ``square_sum`` a 1x1 Conv of ``x * x``
    with a constant band of ones: output channel c sums the squares of the input channels
    ``[c - floor((size - 1) / 2), c + ceil((size - 1) / 2)]``, as ONNX pads the window. The band is
    a Constant node, not an initializer, so it never becomes a trainable parameter (ORT has no
    gradient for LRN)."""
    x = node.inputs[0]
    shape = x.shape
    if shape is None or len(shape) < 3 or not isinstance(shape[1], int):
        raise LLCompileError(f"LRN {node.name!r}: the ort backend needs its input's channels to be static; "
                             "use the torch backend")
    channels, size = shape[1], node.attributes.get_int("size")
    offsets = np.arange(channels)[None, :] - np.arange(channels)[:, None]  # input channel - output channel
    band = ((offsets >= -((size - 1) // 2)) & (offsets <= size // 2)).astype(element_dtype(x))
    band_node = constant_node(band.reshape(channels, channels, *[1] * (len(shape) - 2)))
    squares = ir.Node("", "Mul", [x, x])
    square_sum = ir.Node("", "Conv", [squares.outputs[0], band_node.outputs[0]])
    scale, bias, beta = (scalar_node(v, x) for v in (float_attribute(node, "alpha", 1e-4) / size,
                                                      float_attribute(node, "bias", 1.0),
                                                      float_attribute(node, "beta", 0.75)))
    scaled = ir.Node("", "Mul", [square_sum.outputs[0], scale.outputs[0]])
    shifted = ir.Node("", "Add", [scaled.outputs[0], bias.outputs[0]])
    power = ir.Node("", "Pow", [shifted.outputs[0], beta.outputs[0]])
    return [band_node, squares, square_sum, scale, bias, beta, scaled, shifted, power,
            ir.Node("", "Div", [x, power.outputs[0]])]


register(OpFacts("LRN", Role.ELEMENTWISE, _lrn, no_macs, ElementOps.PER_OUTPUT,
                 Backward(Keeps.INPUT, _squares_and_base), ort_rewrite=decompose_lrn))
