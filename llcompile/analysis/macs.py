"""Per-sample operation counts of one node (batch dimension = 1): MACs and element operations.

One MAC is one multiply-accumulate; FLOPs = 2 x MACs. Each op's MAC rule is in the op registry
(``llcompile/ops/``, the formulas in ``ops/conv.py``, docs/cost-model.md).

Element operations are the work of the ops that are not weight GEMMs, in their own unit and never
mixed into MACs: one per output element of an element-wise or normalisation op, one per window
element for pooling, one per input element for a global pooling / reduction / loss, none for ops
that only move or reshape data (each op's kind is in the registry).
"""

from __future__ import annotations

import math

import onnx_ir as ir

from llcompile.ops.elements import per_sample_elements
from llcompile.ops.registry import ElementOps, op_facts


def forward_macs(node: ir.Node) -> int:
    """MACs of one sample through ``node``: a Conv, Gemm or MatMul with a weight, or a MatMul between
    two activations; 0 for other ops."""
    facts = op_facts(node.op_type)
    return facts.macs(node) if facts is not None else 0


def element_ops(node: ir.Node) -> int:
    """Element operations of one sample through ``node`` (0 for weight GEMMs and data movement).

    Only ops on per-sample float data are counted: call it for nodes that read the data input.
    """
    facts = op_facts(node.op_type)
    kind = facts.element_ops if facts is not None else ElementOps.NONE
    if kind is ElementOps.PER_OUTPUT:
        return per_sample_elements(node.outputs[0])
    if kind is ElementOps.PER_WINDOW:
        kernel = node.attributes.get("kernel_shape")
        return per_sample_elements(node.outputs[0]) * math.prod(kernel.as_ints() if kernel is not None else [1])
    if kind is ElementOps.PER_INPUT:
        return per_sample_elements(node.inputs[0])
    return 0
