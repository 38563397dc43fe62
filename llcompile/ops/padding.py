"""Padding: the Pad op, and the implicit or explicit padding of Conv and the pools (``auto_pad``,
asymmetric ``pads``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import List

import onnx_ir as ir
import torch.nn.functional as F
from torch import Tensor, fx

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import choice, float_attr, ints_attr
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Role, no_macs, register
from llcompile.ops.torch_builder import TorchBuilder


def pad_same(x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], upper: bool,
             value: float) -> Tensor:
    """ONNX ``auto_pad=SAME_UPPER|SAME_LOWER``: pad the spatial dims so the output size is
    ``ceil(size / stride)``; an odd total puts the extra pixel at the end (upper) or the start.
    Generated code calls it (TorchScript compiles it with the forward)."""
    pads: List[int] = []
    for i in range(len(kernel)):
        size = x.shape[2 + i]
        out = (size + strides[i] - 1) // strides[i]
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small = total // 2
        pair = [small, total - small] if upper else [total - small, small]
        pads = pair + pads  # F.pad lists the last dim first
    return F.pad(x, pads, value=value)


def torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """ONNX [x1_begin, x2_begin.., x1_end, x2_end..] halves -> F.pad's [xn_begin, xn_end, ...]."""
    return [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


_AUTO_PADS = {"NOTSET": "NOTSET", "VALID": "VALID", "SAME_UPPER": "SAME_UPPER", "SAME_LOWER": "SAME_LOWER"}


def spatial_padding(g: TorchBuilder, node: ir.Node, x: fx.Proxy, kernel: list[int], fill: float,
                    fits: Callable[[list[int]], bool]) -> tuple[fx.Proxy, list[int], bool]:
    """(padded input, torch ``padding``, whether padding was made explicit) for a Conv/pool reading ``x``.

    Symmetric ONNX pads that ``fits`` accepts become torch's ``padding``; asymmetric ones and
    ``auto_pad=SAME_*`` become an explicit pad with ``fill`` before the op.
    """
    dims = len(kernel)
    auto_pad = choice(node, "auto_pad", "NOTSET", _AUTO_PADS)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        strides, dilations = ints_attr(node, "strides", [1] * dims), ints_attr(node, "dilations", [1] * dims)
        return g.call(pad_same, x, kernel, strides, dilations, auto_pad == "SAME_UPPER", fill), [0] * dims, True
    if auto_pad == "VALID":
        return x, [0] * dims, False
    pads = ints_attr(node, "pads", [0] * 2 * dims)
    begin, end = pads[:dims], pads[dims:]
    if begin == end and fits(begin):
        return x, begin, False
    return F.pad(x, torch_pads(begin, end), value=fill), [0] * dims, True


def fits_torch_pool(pads: list[int], kernel: list[int], dilations: list[int]) -> bool:
    """torch's pools take at most half the (dilated) kernel as implicit padding."""
    return all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(pads, kernel, dilations))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    rank = g.rank(node.inputs[0])
    pads = g.ints(node, 1, "pads")
    if pads is None:  # opset < 11
        pads = ints_attr(node, "pads", [0] * 2 * rank)
    axes = g.ints(node, 3, "axes") or list(range(rank))
    mode = choice(node, "mode", "constant", _PAD_MODES)
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis % rank], end[axis % rank] = pads[i], pads[i + len(axes)]
    if mode == "constant":  # F.pad lists the padded dims from the last one back
        first = next((d for d in range(rank) if begin[d] or end[d]), rank)
    else:  # torch pads (N, C, spatial...) tensors in these modes, all spatial dims at once
        first = 2
        if not 3 <= rank <= 5 or any(begin[:2]) or any(end[:2]):
            raise LLCompileError(f"Pad {node.name!r}: torch pads in {mode!r} mode only the spatial dims "
                                 "of a 3-5-d tensor")
    padding = torch_pads(begin[first:], end[first:])
    if mode != "constant":
        return F.pad(g.x(node), padding, mode=mode)
    value = g.scalar(node, 2, "constant_value")
    return F.pad(g.x(node), padding, value=float_attr(node, "value", 0.0) if value is None else value)


register(OpFacts("Pad", Role.STRUCTURAL, _pad, no_macs, ElementOps.NONE, Backward(Keeps.NOTHING)))
