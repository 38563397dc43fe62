"""Rewrite TorchScript's ``x.view(x.size(0), -1)`` into ``Flatten(x, axis=1)``.

The exported form, ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1]))``, hides the
feature size from shape inference once the batch is symbolic; Flatten states it. The batch size
may also be read from the model input (``n = input.shape[0]`` early in ``forward``): that path
from the input to the head would otherwise bypass every layer and leave no cut point.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from llcompile.frontend.pass_pipeline import LLCompilePass


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type == op_type else None


def _const(value: ir.Value | None) -> np.ndarray | None:
    return value.const_value.numpy() if value is not None and value.const_value is not None else None


def _is_batch_then_rest(target: ir.Value, x: ir.Value, model_input: ir.Value) -> bool:
    """``target`` is ``[Shape(x or the model input)[0], -1]`` built with Concat/Unsqueeze/Gather."""
    concat = _producer(target, "Concat")
    if concat is None or len(concat.inputs) != 2:
        return False
    rest = _const(concat.inputs[1])
    if rest is None or rest.tolist() != [-1]:
        return False
    unsqueeze = _producer(concat.inputs[0], "Unsqueeze")
    gather = _producer(unsqueeze.inputs[0], "Gather") if unsqueeze is not None else None
    shape = _producer(gather.inputs[0], "Shape") if gather is not None else None
    index = _const(gather.inputs[1]) if gather is not None else None
    if shape is None or shape.inputs[0] not in (x, model_input) or index is None or index.size != 1 or int(index) != 0:
        return False
    start = shape.attributes.get("start")  # opset 15+: Shape(x, start=s) does not begin at the batch
    return start is None or start.as_int() == 0


class FlattenViewPass(LLCompilePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        model_input = next(v for v in model.graph.inputs if v.const_value is None)
        for node in list(model.graph):
            if node.op_type != "Reshape" or not _is_batch_then_rest(node.inputs[1], node.inputs[0], model_input):
                continue
            flatten = ir.Node("", "Flatten", [node.inputs[0]], attributes=[ir.AttrInt64("axis", 1)],
                              name=node.name)
            ir.convenience.replace_nodes_and_values(
                model.graph, node, [node], [flatten], [node.outputs[0]], [flatten.outputs[0]])
            modified = True
        return ir.passes.PassResult(model, modified)
