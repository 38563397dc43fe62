"""Per-sample operation counts of one node (batch dimension = 1): MACs and element operations.

One MAC is one multiply-accumulate; FLOPs = 2 x MACs. Formulas (docs/cost-model.md):
Conv ``Hout*Wout*Cout*(Cin/groups)*kh*kw`` (any spatial rank), Gemm/MatMul ``M*K*N``; a MatMul of
[N,T,D] tokens by a [D,E] weight is ``T*D*E``, one between two activations (attention's Q·Kᵀ and
attention·V: [N,heads,T,d] x [N,heads,d,T]) is ``heads*T*T*d``: output elements x the inner size.

Element operations are the work of the ops that are not weight GEMMs, in their own unit and never
mixed into MACs: one per output element of an element-wise or normalisation op, one per window
element for pooling, one per input element for a global pooling / reduction / loss, none for ops
that only move or reshape data.
"""

from __future__ import annotations

import math

import onnx_ir as ir

# one element operation per output element
POINTWISE_OPS = frozenset({
    "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "Elu", "HardSigmoid",
    "HardSwish", "Softplus", "Add", "Sub", "Mul", "Div", "Sum", "Dropout", "LRN", "Softmax", "LogSoftmax",
    "Gelu", "Erf", "Sqrt", "Pow", "LayerNormalization", "Where",
})
# one per window element of every output element
WINDOW_OPS = frozenset({"MaxPool", "AveragePool"})
# one per input element
REDUCTION_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceMin",
                           "SoftmaxCrossEntropyLoss"})


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


def forward_macs(node: ir.Node) -> int:
    """MACs of one sample through ``node``: a Conv, Gemm or MatMul with a weight, or a MatMul between
    two activations; 0 for other ops."""
    if node.op_type == "Conv":
        weight = node.inputs[1]
        cin_per_group_times_kernel = math.prod(weight.shape[1:])
        return per_sample_elements(node.outputs[0]) * cin_per_group_times_kernel
    if node.op_type == "MatMul" and node.inputs[1].const_value is None:
        second = node.inputs[1].shape
        inner = second[-2] if second is not None and second.rank() >= 2 else None
        if not isinstance(inner, int):
            raise ValueError(f"{node.inputs[1].name}: the inner dimension of the product must be static")
        return per_sample_elements(node.outputs[0]) * inner
    if node.op_type in ("Gemm", "MatMul"):
        # K and the output width come from the weight: activation shapes may be symbolic
        weight = node.inputs[1]
        trans_b = node.attributes.get("transB")
        k, n = weight.shape[::-1] if trans_b is not None and trans_b.as_int() else weight.shape
        rows = per_sample_elements(node.outputs[0]) // n if node.op_type == "MatMul" else 1
        return rows * k * n
    return 0


def element_ops(node: ir.Node) -> int:
    """Element operations of one sample through ``node`` (0 for weight GEMMs and data movement).

    Only ops on per-sample float data are counted: call it for nodes that read the data input.
    """
    op = node.op_type
    if op in POINTWISE_OPS:
        return per_sample_elements(node.outputs[0])
    if op in WINDOW_OPS:
        kernel = node.attributes.get("kernel_shape")
        return per_sample_elements(node.outputs[0]) * math.prod(kernel.as_ints() if kernel is not None else [1])
    if op in REDUCTION_OPS:
        return per_sample_elements(node.inputs[0])
    return 0
