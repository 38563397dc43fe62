"""A model of a stage's backward pass, read off its graph: where gradients flow, what is kept.

Gradients: a value *requires grad* when a trained parameter lies upstream of it inside the stage
(a stage's input is a constant of the stage: the stop-gradient between blocks). A node is *recorded*
(its backward runs) when one of its inputs requires grad or is a trained parameter. A weight layer
computes dW when its weight is trained and dX only when its data input requires grad: so the first
layer of the network and of every block, and any layer fed only by them through parameter-free ops,
has no dX.

Activations kept for the backward pass: each recorded node saves what torch's autograd saves for it
(the table ``docs/cost-model.md`` lists and ``tests/report`` checks against torch's saved-tensor
hooks); a tensor saved by several nodes, or through a view (Flatten, Reshape, ...), is counted once,
charged to the first node that saves it. Weights are parameters, not activations, and are never
counted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_ir as ir

from llcompile.analysis.structure import weight_input
from llcompile.analysis.macs import per_sample_elements

FLOAT_BYTES = 4
INDEX_BYTES = 8  # int64: MaxPool indices, labels
MASK_BYTES = 1  # bool: Dropout mask, PRelu's sign

# ops whose backward needs their output Y
SAVES_OUTPUT = frozenset({"Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Sqrt"})
# ops whose backward needs their input X
SAVES_INPUT = frozenset({"Clip", "LeakyRelu", "Elu", "HardSwish", "Softplus", "AveragePool", "Gelu", "Erf", "Pow"})
# ops that save the operand(s) of a product: each computed operand, when the other one needs a gradient
PRODUCT_OPS = frozenset({"Mul", "Div", "MatMul", "Gemm"})
# views: the output shares the input's storage
VIEW_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose"})


@dataclass
class NodeBackward:
    recorded: bool  # its backward runs (element ops backward, dW)
    dx: bool  # a weight layer's gradient with respect to its data input is computed
    dw: bool  # a weight layer's weight gradient is computed
    kept_bytes: int  # activation bytes first saved by this node
    grad_inputs: int = 0  # computed inputs that require grad (a MatMul of two activations: its backward GEMMs)


def backward_facts(nodes: list[ir.Node], trained: set[str], batch_size: int) -> dict[str, NodeBackward]:
    """Per node name (``nodes`` in graph order): whether its backward runs, dX/dW, and the bytes it keeps.

    An empty ``trained`` set is a forward-only stage: nothing is recorded, nothing kept.
    """
    grad: set[ir.Value] = set()  # values that require grad
    alias: dict[ir.Value, ir.Value] = {}  # view -> the value that owns the storage
    kept: set[object] = set()
    facts: dict[str, NodeBackward] = {}

    def root(value: ir.Value) -> ir.Value:
        while value in alias:
            value = alias[value]
        return value

    def value_bytes(value: ir.Value, itemsize: int | None = None) -> int:
        size = itemsize if itemsize is not None else int(value.dtype.itemsize) if value.dtype else FLOAT_BYTES
        elements = per_sample_elements(value) if value.shape is not None else 1
        return elements * batch_size * size

    for node in nodes:
        inputs = [v for v in node.inputs if v is not None]
        is_trained = {v: v.name in trained for v in inputs}
        recorded = any(v in grad or is_trained[v] for v in inputs)
        weight = weight_input(node)
        facts[node.name] = fact = NodeBackward(recorded=recorded, dx=False, dw=False, kept_bytes=0)
        if node.op_type in VIEW_OPS and inputs:
            for out in node.outputs:
                alias[out] = inputs[0]
        if not recorded:
            continue
        for out in node.outputs:
            if out.dtype in (None, ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16):
                grad.add(out)
        fact.grad_inputs = sum(1 for v in inputs if v in grad)
        if weight is not None:
            fact.dx = node.inputs[0] in grad
            fact.dw = weight.name in trained
        items: list[tuple[object, int]] = []  # (identity, bytes) of what the node saves

        def save(value: ir.Value) -> None:
            if value.const_value is None:  # constants and parameters are not activations
                items.append((root(value), value_bytes(value)))

        def extra(tag: str, nbytes: int) -> None:
            items.append(((node.name, tag), nbytes))

        x, y = node.inputs[0] if node.inputs else None, node.outputs[0]
        op = node.op_type
        if weight is not None:
            if fact.dw:
                save(x)
        elif op in PRODUCT_OPS:
            operands = [v for v in node.inputs[:2] if v is not None]
            for i, operand in enumerate(operands):
                other = operands[1 - i] if len(operands) == 2 else None
                if other is not None and (other in grad or other.name in trained):
                    save(operand)
        elif op == "BatchNormalization":
            save(x)
            channels = node.inputs[1].shape[0] if node.inputs[1].shape is not None else 0
            extra("batch mean and inverse std", 2 * channels * FLOAT_BYTES)
        elif op in SAVES_OUTPUT:
            save(y)
        elif op in SAVES_INPUT:
            save(x)
        elif op == "HardSigmoid":  # clamp(x * alpha + beta): the clamp keeps its own input
            extra("clamp input", value_bytes(x))
        elif op == "PRelu":
            save(x)
            extra("sign mask", value_bytes(x, MASK_BYTES))
        elif op == "MaxPool":
            save(x)
            extra("indices", value_bytes(y, INDEX_BYTES))
        elif op in ("GlobalMaxPool", "ReduceMax", "ReduceMin"):
            save(x)
            save(y)
        elif op == "LayerNormalization":  # x, and a mean and an inverse std per normalized row
            save(x)
            rank = x.shape.rank() if x.shape is not None else 1
            axis = node.attributes.get_int("axis", -1) % rank
            rows = math.prod(list(x.shape)[1:axis]) if x.shape is not None else 1
            extra("mean and inverse std", 2 * rows * batch_size * FLOAT_BYTES)
        elif op == "Where":  # the condition, unless a constant mask
            save(node.inputs[0])
        elif op == "Gather":  # index_select keeps its (non-negative) indices, made per call
            indices = node.inputs[1]
            count = math.prod(indices.shape) if indices.shape is not None else 1
            extra("indices", count * INDEX_BYTES)
        elif op == "Dropout":
            extra("mask", value_bytes(y, MASK_BYTES))
        elif op == "LRN":  # x, the padded squares and the power's base
            save(x)
            extra("squares and base", 2 * value_bytes(x))
        elif op == "SoftmaxCrossEntropyLoss":
            extra("log-probabilities", value_bytes(x))
            labels = node.inputs[1]
            items.append((root(labels), value_bytes(labels, INDEX_BYTES)))
            extra("total weight", FLOAT_BYTES)  # a scalar of its own
        for identity, nbytes in items:
            if identity not in kept:
                kept.add(identity)
                fact.kept_bytes += nbytes
    return facts
