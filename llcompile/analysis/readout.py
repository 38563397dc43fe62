"""How the model's own classifier reads its last features: the readout an aux head copies.

A transformer or Mixer ends on a token tensor ``[N, tokens, features]`` that its head reduces over
the token axis, by taking the class token (``x[:, 0]``: a Gather on axis 1) or by the mean over
the tokens, usually with a LayerNormalization before or after; a ConvNeXt pools its feature map
and then normalises. ``model_readout`` finds these ops between the model's last two layers (the
classifier and the layer before it); it never mutates the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from llcompile.analysis.structure import data_dependent_nodes, is_parametric

CLASS_TOKEN = "class_token"
MEAN = "mean"
_POOLS = {"ReduceMean", "GlobalAveragePool", "AveragePool"}


@dataclass(frozen=True)
class Readout:
    tokens: str  # CLASS_TOKEN or MEAN: how a token tensor is reduced over its token axis
    norm: str | None  # "before" or "after" the reduction: where the head's LayerNormalization is; None: none


def model_readout(graph: ir.Graph) -> Readout:
    nodes = data_dependent_nodes(graph)
    layers = [i for i, node in enumerate(nodes) if is_parametric(node)]
    head = nodes[layers[-2] + 1:layers[-1]] if len(layers) >= 2 else []
    reductions = [i for i, node in enumerate(head) if _takes_class_token(node) or node.op_type in _POOLS]
    norms = [i for i, node in enumerate(head) if node.op_type == "LayerNormalization"]
    tokens = CLASS_TOKEN if reductions and _takes_class_token(head[reductions[-1]]) else MEAN
    if not norms:
        return Readout(tokens, None)
    return Readout(tokens, "after" if reductions and norms[-1] > reductions[-1] else "before")


def _takes_class_token(node: ir.Node) -> bool:
    """A Gather of one index on axis 1 of a rank-3 tensor, as ``x[:, 0]`` exports."""
    if node.op_type != "Gather" or node.attributes.get_int("axis", 0) != 1:
        return False
    data, indices = node.inputs[0], node.inputs[1]
    return (data.shape is not None and data.shape.rank() == 3 and indices.const_value is not None
            and indices.const_value.size == 1)


def is_token_tensor(value: ir.Value) -> bool:
    """A rank-3 tensor whose next layers act on its last axis (MatMul): ``[N, tokens, features]``,
    not a 1-D feature map ``[N, channels, length]`` (whose next layer is a Conv)."""
    if value.shape is None or value.shape.rank() != 3:
        return False
    pending, seen, layers = [value], set(), []
    while pending:
        current = pending.pop()
        for use in current.uses():
            node = use.node
            if node in seen:
                continue
            seen.add(node)
            if is_parametric(node):
                layers.append(node)
            else:
                pending.extend(node.outputs)
    return bool(layers) and all(node.op_type in ("MatMul", "Gemm") for node in layers)
