"""A model of a stage's backward pass, read off its graph: where gradients flow, what is kept.

Gradients: a value *requires grad* when a trained parameter lies upstream of it inside the stage
(a stage's input is a constant of the stage: the stop-gradient between blocks). A node is *recorded*
(its backward runs) when one of its inputs requires grad or is a trained parameter. A weight layer
computes dW when its weight is trained and dX only when its data input requires grad: so the first
layer of the network and of every block, and any layer fed only by them through parameter-free ops,
has no dX.

Activations kept for the backward pass: each recorded node saves what torch's autograd saves for it
(its op's backward facts in the op registry, ``llcompile/ops/``; the table ``docs/cost-model.md``
lists and ``tests/report`` checks against torch's saved-tensor hooks); a tensor saved by several
nodes, or through a view (Flatten, Reshape, ...), is counted once, charged to the first node that
saves it. Weights are parameters, not activations, and are never
counted here.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from llcompile.analysis.structure import weight_input
from llcompile.ops.elements import per_sample_elements
from llcompile.ops.registry import FLOAT_BYTES, Keeps, op_facts

FLOAT_TYPES = (None, ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


@dataclass
class NodeBackward:
    recorded: bool  # its backward runs (element ops backward, dW)
    dx: bool  # a weight layer's gradient with respect to its data input is computed
    dw: bool  # a weight layer's weight gradient is computed
    kept_bytes: int  # activation bytes first saved by this node
    grad_inputs: int = 0  # computed inputs that require grad (a MatMul of two activations: its backward GEMMs)


class _NodeSaves:
    """What one recorded node saves, as (identity, bytes): the ``SavedTensors`` its op's facts fill.
    A value's identity is the value owning its storage (through views); a node's own tensor's is
    (node name, tag)."""

    def __init__(self, node: ir.Node, batch_size: int, alias: dict[ir.Value, ir.Value]):
        self.node = node
        self.batch_size = batch_size
        self.alias = alias
        self.items: list[tuple[object, int]] = []

    def root(self, value: ir.Value) -> ir.Value:
        while value in self.alias:
            value = self.alias[value]
        return value

    def value_bytes(self, value: ir.Value, itemsize: int | None = None) -> int:
        size = itemsize if itemsize is not None else int(value.dtype.itemsize) if value.dtype else FLOAT_BYTES
        elements = per_sample_elements(value) if value.shape is not None else 1
        return elements * self.batch_size * size

    def save(self, value: ir.Value, itemsize: int | None = None) -> None:
        if value.const_value is None:  # constants and parameters are not activations
            self.items.append((self.root(value), self.value_bytes(value, itemsize)))

    def keep(self, tag: str, nbytes: int) -> None:
        self.items.append(((self.node.name, tag), nbytes))


def backward_facts(nodes: list[ir.Node], trained: set[str], batch_size: int) -> dict[str, NodeBackward]:
    """Per node name (``nodes`` in graph order): whether its backward runs, dX/dW, and the bytes it keeps.

    An empty ``trained`` set is a forward-only stage: nothing is recorded, nothing kept.
    """
    grad: set[ir.Value] = set()  # values that require grad
    alias: dict[ir.Value, ir.Value] = {}  # view -> the value that owns the storage
    kept: set[object] = set()
    facts: dict[str, NodeBackward] = {}

    for node in nodes:
        inputs = [v for v in node.inputs if v is not None]
        is_trained = {v: v.name in trained for v in inputs}
        recorded = any(v in grad or is_trained[v] for v in inputs)
        weight = weight_input(node)
        op = op_facts(node.op_type)
        keeps = op.backward.keeps if op is not None else Keeps.NOTHING
        facts[node.name] = fact = NodeBackward(recorded=recorded, dx=False, dw=False, kept_bytes=0)
        if keeps is Keeps.VIEW and inputs:
            for out in node.outputs:
                alias[out] = inputs[0]
        if not recorded:
            continue
        for out in node.outputs:
            if out.dtype in FLOAT_TYPES:
                grad.add(out)
        fact.grad_inputs = sum(1 for v in inputs if v in grad)
        if weight is not None:
            fact.dx = node.inputs[0] in grad
            fact.dw = weight.name in trained
        saves = _NodeSaves(node, batch_size, alias)
        x, y = node.inputs[0] if node.inputs else None, node.outputs[0]
        if weight is not None:  # a layer keeps its data input for dW, whatever its op's facts say
            if fact.dw:
                saves.save(x)
        else:
            if keeps is Keeps.PRODUCT_OPERANDS:
                operands = [v for v in node.inputs[:2] if v is not None]
                for i, operand in enumerate(operands):
                    other = operands[1 - i] if len(operands) == 2 else None
                    if other is not None and (other in grad or other.name in trained):
                        saves.save(operand)
            if keeps in (Keeps.INPUT, Keeps.INPUT_AND_OUTPUT):
                saves.save(x)
            if keeps in (Keeps.OUTPUT, Keeps.INPUT_AND_OUTPUT):
                saves.save(y)
            if op is not None and op.backward.extra_saved is not None:
                op.backward.extra_saved(node, saves)
        for identity, nbytes in saves.items:
            if identity not in kept:
                kept.add(identity)
                fact.kept_bytes += nbytes
    return facts
