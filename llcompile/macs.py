"""Forward multiply-accumulate counts of the parametric ops, per sample (batch dimension = 1).

One MAC is one multiply-accumulate; FLOPs = 2 x MACs. Formulas (docs/cost-model.md):
Conv ``Hout*Wout*Cout*(Cin/groups)*kh*kw`` (any spatial rank), Gemm/MatMul ``M*K*N``.
"""

from __future__ import annotations

import math

import onnx_ir as ir


def _per_sample_elements(value: ir.Value) -> int:
    """Elements of ``value`` for one sample: every dimension but the first (the batch)."""
    if value.shape is None:
        raise ValueError(f"{value.name}: shape unknown")
    dims = list(value.shape)[1:]
    if not all(isinstance(d, int) for d in dims):
        raise ValueError(f"{value.name}: non-batch dimensions must be static, got {value.shape}")
    return math.prod(dims)


def forward_macs(node: ir.Node) -> int:
    """MACs of one sample through ``node``; 0 for ops without a weight GEMM."""
    if node.op_type == "Conv":
        weight = node.inputs[1]
        cin_per_group_times_kernel = math.prod(weight.shape[1:])
        return _per_sample_elements(node.outputs[0]) * cin_per_group_times_kernel
    if node.op_type in ("Gemm", "MatMul"):
        # K and the output width come from the weight: activation shapes may be symbolic
        weight = node.inputs[1]
        trans_b = node.attributes.get("transB")
        k, n = weight.shape[::-1] if trans_b is not None and trans_b.as_int() else weight.shape
        rows = _per_sample_elements(node.outputs[0]) // n if node.op_type == "MatMul" else 1
        return rows * k * n
    return 0
