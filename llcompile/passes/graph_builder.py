"""Small helpers the strategy passes use to add nodes, weights and losses to a graph."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.passes.dynamic_batch import BATCH_DIM


class GraphBuilder:
    """Appends named nodes and initializers to ``graph``, every name under ``prefix``."""

    def __init__(self, graph: ir.Graph, prefix: str):
        self.graph = graph
        self.prefix = prefix

    def initializer(self, name: str, array: np.ndarray) -> ir.Value:
        full = f"{self.prefix}.{name}"
        value = ir.Value(name=full, shape=ir.Shape(array.shape),
                         type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.tensor(array, name=full))
        self.graph.register_initializer(value)
        return value

    def op(self, op_type: str, inputs: list[ir.Value], output: str, num_outputs: int = 1,
           **attributes) -> ir.Value:
        node = ir.Node("", op_type, inputs, attributes=ir.convenience.convert_attributes(attributes),
                       num_outputs=num_outputs, name=f"{self.prefix}.{output}")
        node.outputs[0].name = f"{self.prefix}.{output}"
        for i, extra in enumerate(node.outputs[1:], start=1):
            extra.name = f"{self.prefix}.{output}.{i}"
        self.graph.append(node)
        return node.outputs[0]


def labels_input(graph: ir.Graph, name: str) -> ir.Value:
    """The int64 [N] class-label input, created on first use."""
    for value in graph.inputs:
        if value.name == name:
            return value
    value = ir.Value(name=name, shape=ir.Shape([BATCH_DIM]), type=ir.TensorType(ir.DataType.INT64))
    graph.inputs.append(value)
    return value


def add_cross_entropy(graph: ir.Graph, logits: ir.Value, labels: ir.Value, loss_name: str) -> ir.Value:
    """Mean softmax cross-entropy of ``logits`` against ``labels``, added as a graph output."""
    node = ir.Node("", "SoftmaxCrossEntropyLoss", [logits, labels],
                   attributes=[ir.AttrString("reduction", "mean")], name=loss_name)
    node.outputs[0].name = loss_name
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    node.outputs[0].shape = ir.Shape([])
    graph.append(node)
    graph.outputs.append(node.outputs[0])
    return node.outputs[0]


def uniform_fan_in(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """torch's default Conv/Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)
