"""``ai.llcompile::HebbianUpdate``, llcompile's own op: a Hebbian stage's new weight (the ONNX
function is built in ``llcompile/passes/hebbian_function.py``), and the torch run-time helper that
generated code calls for it.

The correlation of input patches with output maps is exactly what the convolution's
weight-gradient kernel computes with the layer's output in place of dY, so the update runs as
one ``aten.convolution_backward`` with only the weight gradient requested: the same single GEMM
(im2col or oneDNN/cuDNN) that backprop's dW would use, and no dX.
"""

from __future__ import annotations

from typing import List

import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import Tensor, fx

from llcompile.ops.attributes import ints_attr, number
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, OpsetRange, Role, no_macs, register
from llcompile.ops.torch_builder import TorchBuilder

DOMAIN = "ai.llcompile"
OP_TYPE = "HebbianUpdate"
DOMAIN_VERSION = 1


def hebbian_update(x: Tensor, y: Tensor, w: Tensor, lr: Tensor, strides: List[int], pads: List[int],
                   dilations: List[int], groups: int, decay: float, renormalize: bool,
                   triangular: bool = False, temperature: float = 0.0) -> Tensor:
    """``W + lr * (H - decay * D W)``, rescaled per filter to the old norm when ``renormalize``; ``H``
    the mean over samples and positions of ``y x^T``; ``D`` = ``diag(mean y Y)`` (Oja: ``y = Y``), or
    with ``triangular`` the lower triangle of ``mean y y^T`` within each group (Sanger); ``y`` is ``Y``,
    or with ``temperature > 0`` its softmax over the filters (SoftHebb). Pads in ONNX order."""
    given = y
    if temperature > 0:
        y = torch.softmax(y / temperature, dim=1)
    dims = len(strides)
    begin, end = pads[:dims], pads[dims:]
    if begin != end:
        torch_pads: List[int] = []
        for i in range(dims - 1, -1, -1):  # F.pad lists the last dim first
            torch_pads += [begin[i], end[i]]
        x = F.pad(x, torch_pads)
        begin = [0] * dims
    grads = torch.ops.aten.convolution_backward(y, x, w, None, strides, begin, dilations, False, [0] * dims, groups,
                                                [False, True, False])
    count = y.numel() // y.shape[1]
    filters = w.shape[0]
    hebbian = grads[1].reshape(filters, -1) / count
    rows = w.reshape(filters, -1)
    if triangular:
        y_rows = y.transpose(0, 1).reshape(filters, -1)
        group_of = torch.div(torch.arange(filters, device=y.device), filters // groups, rounding_mode="floor")
        same_group = group_of.unsqueeze(1) == group_of.unsqueeze(0)
        competition = torch.tril(torch.mm(y_rows, y_rows.t()) / count) * same_group
        unit_term = torch.mm(competition, rows)
    else:
        reduce_dims: List[int] = [0] + list(range(2, y.dim()))
        unit_term = (y * given).sum(dim=reduce_dims).reshape(filters, 1) / count * rows
    stepped = rows + lr * (hebbian - decay * unit_term)
    if renormalize:
        # squared norms summed explicitly: TorchScript has no Tensor.norm(dim=...) without p; a filter
        # that is all zero after the step stays zero (factor 1, no 0/0), as in the ONNX function
        norm_squared = (rows * rows).sum(dim=1, keepdim=True)
        stepped_norm_squared = (stepped * stepped).sum(dim=1, keepdim=True)
        nonzero = stepped_norm_squared > 0
        ones = torch.ones_like(stepped_norm_squared)
        ratio = torch.sqrt(norm_squared / torch.where(nonzero, stepped_norm_squared, ones))
        stepped = stepped * torch.where(nonzero, ratio, ones)
    return stepped.reshape(w.shape)


def _hebbian_update(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    a = node.attributes
    return g.call(hebbian_update, *(g.x(node, i) for i in range(4)),
                  *(ints_attr(node, name, []) for name in ("strides", "pads", "dilations")),
                  int(a.get_int("group")), number(a.get_float("decay")), bool(a.get_int("renormalize")),
                  bool(a.get_int("triangular")), number(a.get_float("temperature")))


# its work is costed by the cost model's Hebbian terms, not per node
register(OpFacts(OP_TYPE, Role.WEIGHT_UPDATE, _hebbian_update, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING),
                 opsets=OpsetRange(DOMAIN_VERSION, DOMAIN_VERSION), domain=DOMAIN))
