"""Dropout: an ``nn.Dropout``, active in ``train()`` only, like torch."""

from __future__ import annotations

import onnx_ir as ir
from torch import fx, nn

from llcompile.ops.attributes import float_attr
from llcompile.ops.registry import MASK_BYTES, Backward, ElementOps, Keeps, OpFacts, Role, SavedTensors, no_macs, register
from llcompile.ops.torch_builder import TorchBuilder


def _dropout(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    # A training_mode input does not override the module's mode.
    ratio = g.scalar(node, 1, "ratio")
    ratio = float_attr(node, "ratio", 0.5) if ratio is None else ratio
    return g.own(nn.Dropout(float(ratio)))(g.x(node))


def _mask(node: ir.Node, saved: SavedTensors) -> None:
    saved.keep("mask", saved.value_bytes(node.outputs[0], MASK_BYTES))


def dropout_with_mask(node: ir.Node) -> list[ir.Node]:
    """The same Dropout with its optional mask output, which ORT's Dropout gradient reads (without
    it, building the training graph fails on "i < node_->OutputDefs().size()")."""
    return [ir.Node("", "Dropout", list(node.inputs), attributes=list(node.attributes.values()), num_outputs=2)]


register(OpFacts("Dropout", Role.ELEMENTWISE, _dropout, no_macs, ElementOps.PER_OUTPUT, Backward(Keeps.NOTHING, _mask),
                 ort_rewrite=dropout_with_mask))
