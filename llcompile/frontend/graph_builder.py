"""Small helpers the strategy passes use to add nodes, weights and losses to a graph."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.frontend.naming import NameScope
from llcompile.frontend.canonical.dynamic_batch import BATCH_DIM


class GraphBuilder:
    """Appends nodes and initializers to ``graph``, named ``prefix.name`` unless that is taken."""

    def __init__(self, graph: ir.Graph, prefix: str):
        self.graph = graph
        self.prefix = prefix
        self.names = NameScope(graph)

    def initializer(self, name: str, array: np.ndarray) -> ir.Value:
        return self.names.initializer(f"{self.prefix}.{name}", array)

    def int64s(self, name: str, values: list[int]) -> ir.Value:
        """An int64 vector initializer: the shapes, axes and indices ops take."""
        return self.initializer(name, np.array(values, dtype=np.int64))

    def batch_norm(self, x: ir.Value, name: str, channels: int) -> ir.Value:
        """A fresh BatchNormalization of ``x`` on the batch's statistics (training form, momentum 0.9),
        torch's initial state: weight 1, bias 0, running mean 0, running var 1."""
        state = [self.initializer(f"{name}.{key}", fill(channels, np.float32)) for key, fill in (
            ("weight", np.ones), ("bias", np.zeros), ("running_mean", np.zeros), ("running_var", np.ones))]
        return self.op("BatchNormalization", [x, *state], name, num_outputs=3, training_mode=1, momentum=0.9)

    def op(self, op_type: str, inputs: list[ir.Value], output: str, num_outputs: int = 1,
           **attributes) -> ir.Value:
        name = self.names.fresh(f"{self.prefix}.{output}")
        node = ir.Node("", op_type, inputs, attributes=ir.convenience.convert_attributes(attributes),
                       num_outputs=num_outputs, name=name)
        node.outputs[0].name = name
        for i, extra in enumerate(node.outputs[1:], start=1):
            extra.name = self.names.fresh(f"{name}.{i}")
        self.graph.append(node)
        return node.outputs[0]


def subsample_batch(b: GraphBuilder, values: dict[str, ir.Value], every: int) -> list[ir.Value]:
    """Every ``every``-th sample of each of ``values`` (output name -> value): a strided view of the
    shuffled batch, so that any batch keeps at least one sample, typed like the value with a
    symbolic batch: it is not the model's batch."""
    indices = [b.int64s(name, dims) for name, dims in
               (("first", [0]), ("to_end", [2**62]), ("batch_axis", [0]), ("every", [every]))]
    subsets = []
    for name, value in values.items():
        subset = b.op("Slice", [value, *indices], name)
        subset.type = value.type
        if value.shape is not None:
            subset.shape = ir.Shape([None, *list(value.shape)[1:]])
        subsets.append(subset)
    return subsets


def value_named(graph: ir.Graph, name: str) -> ir.Value:
    """The graph input or node output called ``name``."""
    for value in graph.inputs:
        if value.name == name:
            return value
    for node in graph:
        for value in node.outputs:
            if value.name == name:
                return value
    raise KeyError(name)


def labels_input(graph: ir.Graph, name: str) -> ir.Value:
    """The int64 [N] class-label input called ``name`` (a fresh name from the plan), created on first use."""
    try:
        return value_named(graph, name)
    except KeyError:
        value = ir.Value(name=name, shape=ir.Shape([BATCH_DIM]), type=ir.TensorType(ir.DataType.INT64))
        graph.inputs.append(value)
        return value


def add_cross_entropy(graph: ir.Graph, logits: ir.Value, labels: ir.Value, loss_name: str) -> ir.Value:
    """Mean softmax cross-entropy of ``logits`` against ``labels``, added as a graph output named
    ``loss_name`` or, if that is taken, a fresh variant of it."""
    node = ir.Node("", "SoftmaxCrossEntropyLoss", [logits, labels],
                   attributes=[ir.AttrString("reduction", "mean")])
    graph.append(node)
    return add_loss_output(graph, node, loss_name)


def add_loss_output(graph: ir.Graph, node: ir.Node, loss_name: str) -> ir.Value:
    """Name ``node`` and its (scalar float) output ``loss_name`` or a fresh variant of it, and make
    that output a graph output."""
    loss_name = NameScope(graph).fresh(loss_name)
    node.name = loss_name
    node.outputs[0].name = loss_name
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    node.outputs[0].shape = ir.Shape([])
    graph.outputs.append(node.outputs[0])
    return node.outputs[0]


def uniform_fan_in(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """torch's default Conv/Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)
