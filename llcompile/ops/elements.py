"""Per-sample element counts of a value: the unit of MAC rules, element operations and saved bytes."""

from __future__ import annotations

import math

import onnx_ir as ir


def per_sample_elements(value: ir.Value) -> int:
    """Elements of ``value`` for one sample: every dimension but the batch, which is its one symbolic
    dimension (the first unless the graph moved it, as torch's MultiheadAttention does: ``[T, N, E]``),
    or the first when all are static."""
    if value.shape is None:
        raise ValueError(f"{value.name}: shape unknown")
    dims = list(value.shape)
    symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    if len(symbolic) > 1:
        raise ValueError(f"{value.name}: non-batch dimensions must be static, got {value.shape}")
    batch_axis = symbolic[0] if symbolic else 0
    return math.prod(d for i, d in enumerate(dims) if i != batch_axis)
