"""Building the ONNX nodes of an op's decomposition for onnxruntime-training."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def element_dtype(value: ir.Value) -> np.dtype:
    """``value``'s numpy element type; float32 when the graph does not say."""
    return np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)


def constant_node(array: np.ndarray) -> ir.Node:
    """A Constant node holding ``array`` (an unnamed node and output: the caller names them)."""
    return ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", ir.tensor(array))])


def scalar_node(value: float, like: ir.Value) -> ir.Node:
    """A scalar Constant node of ``like``'s element type."""
    return constant_node(np.array(value, dtype=element_dtype(like)))


def ints_node(values: list[int]) -> ir.Node:
    """An int64 vector Constant node (shapes, axes, k)."""
    return constant_node(np.array(values, np.int64))


def op_node(op_type: str, *inputs: ir.Value, **attributes) -> ir.Node:
    """A standard-domain node of ``op_type`` on ``inputs``."""
    return ir.Node("", op_type, list(inputs), attributes=ir.convenience.convert_attributes(attributes))


def float_attribute(node: ir.Node, name: str, default: float) -> float:
    """A float attribute, ``default`` when absent."""
    attribute = node.attributes.get(name)
    return attribute.as_float() if attribute is not None else default
