"""The weight layers: Conv, Gemm, MatMul (also a MatMul between two activations, attention's
Q·Kᵀ and attention·V).

MACs per sample (docs/cost-model.md): Conv ``Hout*Wout*Cout*(Cin/groups)*kh*kw`` (any spatial
rank), Gemm/MatMul ``M*K*N``; a MatMul of [N,T,D] tokens by a [D,E] weight is ``T*D*E``, one
between two activations ([N,heads,T,d] x [N,heads,d,T]) is ``heads*T*T*d``: output elements x
the inner size.
"""

from __future__ import annotations

import math

import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import fx, nn

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import ints_attr, number, torch_dtype
from llcompile.ops.elements import per_sample_elements
from llcompile.ops.padding import spatial_padding
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Role, register
from llcompile.ops.torch_builder import TorchBuilder


def _conv(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    weight, bias = g.input(node, 1), g.input(node, 2)
    dims = g.rank(weight) - 2
    if dims not in (1, 2, 3):
        raise LLCompileError(f"Conv {node.name!r}: {dims}-d convolution is not supported")
    kernel = [int(k) for k in weight.shape[2:]]
    strides, dilations = ints_attr(node, "strides", [1] * dims), ints_attr(node, "dilations", [1] * dims)
    groups = int(node.attributes.get_int("group", 1))
    x, padding, _ = spatial_padding(g, node, g.x(node), kernel, 0.0, fits=lambda pads: True)
    w = g.array(weight)
    if w is None or not g.exclusive(node):
        b = g.x(node, 2) if bias is not None else None
        conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
        return conv(x, g.x(node, 1), b, strides, padding, dilations, groups)
    conv_class = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    conv = conv_class(w.shape[1] * groups, w.shape[0], kernel, strides, padding, dilations, groups,
                      bias=bias is not None, dtype=torch_dtype(w))
    return g.own(conv, weight=weight, bias=bias)(x)


def _conv_macs(node: ir.Node) -> int:
    cin_per_group_times_kernel = math.prod(node.inputs[1].shape[1:])
    return per_sample_elements(node.outputs[0]) * cin_per_group_times_kernel


def _gemm(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    a = node.attributes
    alpha, beta = number(a.get_float("alpha", 1.0)), number(a.get_float("beta", 1.0))
    trans_a, trans_b = a.get_int("transA", 0), a.get_int("transB", 0)
    weight, bias = g.input(node, 1), g.input(node, 2)
    w, b = g.array(weight), g.array(bias)
    is_linear = (w is not None and trans_b == 1 and trans_a == 0 and alpha == beta == 1.0
                 and (bias is None or (b is not None and b.shape == (w.shape[0],))) and g.exclusive(node))
    if is_linear:
        linear = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=torch_dtype(w))
        return g.own(linear, weight=weight, bias=bias)(g.x(node))
    lhs = g.x(node, 0).t() if trans_a else g.x(node, 0)
    rhs = g.x(node, 1).t() if trans_b else g.x(node, 1)
    if bias is None:
        product = torch.mm(lhs, rhs)
        return product if alpha == 1.0 else product * alpha
    return torch.addmm(g.x(node, 2), lhs, rhs, beta=beta, alpha=alpha)


def _weight_product_macs(node: ir.Node) -> int:
    """A Gemm's or a MatMul's by its weight: K and the output width come from the weight, as
    activation shapes may be symbolic."""
    weight = node.inputs[1]
    trans_b = node.attributes.get("transB")
    k, n = weight.shape[::-1] if trans_b is not None and trans_b.as_int() else weight.shape
    rows = per_sample_elements(node.outputs[0]) // n if node.op_type == "MatMul" else 1
    return rows * k * n


def _matmul(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    # A constant weight stays a [K, N] parameter in ONNX layout: state is exchanged in it.
    return torch.matmul(g.x(node, 0), g.x(node, 1))


def _matmul_macs(node: ir.Node) -> int:
    if node.inputs[1].const_value is not None:
        return _weight_product_macs(node)
    second = node.inputs[1].shape
    inner = second[-2] if second is not None and second.rank() >= 2 else None
    if not isinstance(inner, int):
        raise ValueError(f"{node.inputs[1].name}: the inner dimension of the product must be static")
    return per_sample_elements(node.outputs[0]) * inner


# a layer keeps its data input for dW (cost/autograd.py); without a constant weight, a product's operands
register(OpFacts("Conv", Role.PARAMETRIC, _conv, _conv_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
register(OpFacts("Gemm", Role.PARAMETRIC, _gemm, _weight_product_macs, ElementOps.NONE,
                 Backward(Keeps.PRODUCT_OPERANDS)))
register(OpFacts("MatMul", Role.PARAMETRIC, _matmul, _matmul_macs, ElementOps.NONE,
                 Backward(Keeps.PRODUCT_OPERANDS)))
