"""Turn the static dimensions that exporters read from tensors at run time into constants.

``n, t, d = x.shape`` exports as ``Gather(Shape(x), i)``; a view to ``[n, t, 3, heads, d // heads]``
then computes ``d // heads`` with Div and Cast, which ONNX shape inference does not propagate, so
the attention tensors after it get unknown dimensions (and the cost report cannot count them). Every
dimension but the batch is known once shapes are inferred: ``Gather(Shape(x), i)`` of a static
dimension becomes that constant, the arithmetic on it is folded, and shapes are inferred again,
until nothing changes. A Reshape whose computed target is then known to be ``[the input's batch,
static dims...]`` (with at most one unknown, e.g. ``x.flatten(2)``'s -1) gets the constant target
``[0, dims..., -1]``: 0 copies the batch. The batch is never baked in: the model takes any batch.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.frontend.naming import NameScope
from llcompile.frontend.canonical.fold_constants import FoldConstantsPass
from llcompile.frontend.shape_inference import infer_shapes
from llcompile.frontend.pass_pipeline import LLCompilePass


def _static_dims(shape_node: ir.Node) -> list[int | None]:
    """The dims a Shape node reads (its start/end applied), None where not static."""
    value = shape_node.inputs[0]
    if value.shape is None:
        return []
    dims = [d if isinstance(d, int) else None for d in value.shape]
    start = shape_node.attributes.get_int("start", 0)
    end = shape_node.attributes.get_int("end", len(dims))
    return dims[start:end]


def _known_dims(node: ir.Node) -> np.ndarray | None:
    """The value of ``Gather(Shape(x), indices)`` or of ``Shape(x)`` when every dim it reads is static."""
    if node.op_type == "Shape":
        dims = _static_dims(node)
        return np.array(dims, np.int64) if dims and None not in dims else None
    if node.op_type != "Gather" or node.inputs[1].const_value is None:
        return None
    shape_node = node.inputs[0].producer()
    if shape_node is None or shape_node.op_type != "Shape":
        return None
    dims = _static_dims(shape_node)
    indices = node.inputs[1].const_value.numpy()
    if not dims or np.any(indices >= len(dims)) or np.any(indices < -len(dims)):
        return None
    picked = [dims[int(i)] for i in indices.reshape(-1)]
    return None if None in picked else np.array(picked, np.int64).reshape(indices.shape)


def _batch_preserving_target(node: ir.Node) -> np.ndarray | None:
    """``[0, d1, ..., -1]`` for a Reshape with a computed target whose inferred output keeps the
    input's (symbolic) first dim and has static other dims, at most one unknown."""
    if node.op_type != "Reshape" or node.inputs[1].const_value is not None \
            or node.attributes.get_int("allowzero", 0):
        return None
    source, out = node.inputs[0].shape, node.outputs[0].shape
    if source is None or out is None or out.rank() == 0 or isinstance(out[0], int) or out[0].value is None \
            or source.rank() == 0 or out[0] != source[0]:
        return None
    rest = [d if isinstance(d, int) else -1 for d in list(out)[1:]]
    return np.array([0, *rest], np.int64) if rest.count(-1) <= 1 else None


class StaticShapeDimsPass(LLCompilePass):
    def __init__(self, source: str = "model"):
        super().__init__()
        self.source = source

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        while True:
            infer_shapes(model, self.source)
            names = NameScope(graph)
            replaced = False
            for node in list(graph):
                target = _batch_preserving_target(node)
                if target is not None:
                    node.replace_input_with(1, names.initializer(f"{node.outputs[0].name}.target", target))
                    replaced = True
                    continue
                known = _known_dims(node)
                if known is None or node.outputs[0].is_graph_output():
                    continue
                node.outputs[0].replace_all_uses_with(
                    names.initializer(f"{node.outputs[0].name}.static", known))
                graph.remove(node, safe=True)
                replaced = True
            if not replaced:
                return ir.passes.PassResult(model, modified)
            FoldConstantsPass()(model)
            modified = True
