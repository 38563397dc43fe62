"""Views and reshapes: Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Identity, Expand.

The views (all but Expand) share their input's storage: what a later node keeps of their output is
their input, counted once (``cost/autograd.py``).
"""

from __future__ import annotations

from typing import List

import onnx_ir as ir
import torch
from torch import Tensor, fx

from llcompile.ops.attributes import ints_attr
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Role, no_macs, register
from llcompile.ops.torch_builder import Emitter, TorchBuilder


def _data_movement(op_type: str, emitter: Emitter, keeps: Keeps, role: Role = Role.STRUCTURAL) -> None:
    """Register an op that only moves data: no MACs, no element operations."""
    register(OpFacts(op_type, role, emitter, no_macs, ElementOps.NONE, Backward(keeps)))


def onnx_reshape(x: Tensor, shape: Tensor, allowzero: bool) -> Tensor:
    """ONNX Reshape to a shape computed at run time (0 copies the input's dim unless allowzero).
    Generated code calls it."""
    dims: List[int] = shape.tolist()
    if not allowzero:
        for i in range(len(dims)):
            if dims[i] == 0:
                dims[i] = x.shape[i]
    return x.reshape(dims)


def onnx_expand(x: Tensor, shape: Tensor) -> Tensor:
    """ONNX Expand: ``x`` and ``shape`` broadcast against each other (a 1 in ``shape`` keeps ``x``'s dim,
    unlike torch's ``expand``, where -1 does). Generated code calls it."""
    dims: List[int] = shape.tolist()
    rank = max(x.dim(), len(dims))
    dims = [1] * (rank - len(dims)) + dims
    x = x.reshape([1] * (rank - x.dim()) + list(x.shape))
    return x.expand([max(d, s) for d, s in zip(dims, list(x.shape))])


def _flatten(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    axis = int(node.attributes.get_int("axis", 1))
    if axis < 0:
        axis += g.rank(node.inputs[0])
    x = g.x(node)
    if axis == 0:
        return x.reshape(1, -1)
    if axis == 1:
        return torch.flatten(x, 1)
    return torch.flatten(torch.flatten(x, axis), 0, axis - 1)


def _reshape(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    x = g.x(node)
    allowzero = bool(node.attributes.get_int("allowzero", 0))
    shape = g.array(node.inputs[1])
    if shape is None:
        return g.call(onnx_reshape, x, g.x(node, 1), allowzero)
    return x.reshape([x.size(i) if d == 0 and not allowzero else int(d) for i, d in enumerate(shape)])


def _squeeze(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    axes = g.ints(node, 1, "axes")
    if axes is None:
        axes = ints_attr(node, "axes", [])
    return torch.squeeze(g.x(node), axes) if axes else torch.squeeze(g.x(node))


def _unsqueeze(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    axes = g.ints(node, 1, "axes")
    if axes is None:
        axes = ints_attr(node, "axes", [])
    out_rank = g.rank(node.inputs[0]) + len(axes)
    # ONNX axes index the output; inserting them in increasing order makes each one land there.
    x = g.x(node)
    for axis in sorted(a % out_rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _transpose(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    perm = ints_attr(node, "perm", list(reversed(range(g.rank(node.inputs[0])))))
    return g.x(node).permute(perm)


def _identity(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return g.x(node)


def _expand(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return g.call(onnx_expand, g.x(node, 0), g.x(node, 1))


_data_movement("Flatten", _flatten, Keeps.VIEW)
_data_movement("Reshape", _reshape, Keeps.VIEW)
_data_movement("Squeeze", _squeeze, Keeps.VIEW)
_data_movement("Unsqueeze", _unsqueeze, Keeps.VIEW)
_data_movement("Transpose", _transpose, Keeps.VIEW)
_data_movement("Identity", _identity, Keeps.VIEW, role=Role.ELEMENTWISE)
_data_movement("Expand", _expand, Keeps.NOTHING)
