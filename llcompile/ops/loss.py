"""SoftmaxCrossEntropyLoss: the loss llcompile inserts into each stage's training graph."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import torch.nn.functional as F
from torch import fx

from llcompile.ops.attributes import choice
from llcompile.ops.registry import (FLOAT_BYTES, INDEX_BYTES, Backward, ElementOps, Keeps, OpFacts, Role,
                                    SavedTensors, no_macs, register)
from llcompile.ops.torch_builder import TorchBuilder

_REDUCTIONS = {"mean": "mean", "sum": "sum", "none": "none"}


def _softmax_cross_entropy(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    kwargs: dict[str, Any] = {}
    if g.input(node, 2) is not None:
        kwargs["weight"] = g.x(node, 2)
    if "ignore_index" in node.attributes:
        kwargs["ignore_index"] = int(node.attributes.get_int("ignore_index"))
    kwargs["reduction"] = choice(node, "reduction", "mean", _REDUCTIONS)
    return F.cross_entropy(g.x(node, 0), g.x(node, 1), **kwargs)


def _log_probabilities_and_labels(node: ir.Node, saved: SavedTensors) -> None:
    saved.keep("log-probabilities", saved.value_bytes(node.inputs[0]))
    saved.save(node.inputs[1], INDEX_BYTES)
    saved.keep("total weight", FLOAT_BYTES)  # a scalar of its own


register(OpFacts("SoftmaxCrossEntropyLoss", Role.LOSS, _softmax_cross_entropy, no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.NOTHING, _log_probabilities_and_labels)))
