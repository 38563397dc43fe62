"""Shapes that onnx's shape inference leaves unknown, from onnxruntime's symbolic shape inference.

Exporters write ``x.reshape(B, T, 3, heads, dim // heads)`` and ``cls.expand(B, -1, -1)`` as
arithmetic on ``Shape(x)`` (Gather, Div, Concat, Equal, Where); onnx's data propagation stops at
the symbolic batch and at Div/Where, so a transformer's attention tensors get unknown per-sample
dims, which the cost model needs. onnxruntime's ``SymbolicShapeInference`` carries the batch as a
sympy symbol through that arithmetic. It reads dim names through sympy, which parses strings, so it
is handed a copy whose only dim name is the batch's (llcompile's own ``N``): no value info, graph
outputs without shapes.
"""

from __future__ import annotations

import logging

import onnx
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from llcompile.passes.dynamic_batch import BATCH_DIM

Dims = list[int | str]


def dims_of(type_proto: onnx.TypeProto) -> Dims | None:
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in tensor.shape.dim]


def is_resolved(dims: Dims | None) -> bool:
    """Every dim static or the batch ``N``."""
    return dims is not None and all(isinstance(d, int) or d == BATCH_DIM for d in dims)


def symbolic_shapes(proto: onnx.ModelProto) -> dict[str, Dims]:
    """Value name -> dims (ints and ``N``) for every value whose dims the symbolic inference resolves.

    ``proto``: a canonical model (its data input ``[N, static...]``); it is not modified. An empty
    dict when the inference fails on this graph.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]
    for output in copy.graph.output:
        output.type.tensor_type.ClearField("shape")
    for graph_input in copy.graph.input:
        if not is_resolved(dims_of(graph_input.type)):
            return {}
    logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        inferred = SymbolicShapeInference.infer_shapes(copy, auto_merge=True)
    except Exception:  # noqa: BLE001 - a tool that raises anything on graphs it cannot follow
        return {}
    finally:
        logger.setLevel(previous)
    if inferred is None:
        return {}
    infos = [*inferred.graph.value_info, *inferred.graph.output]
    return {info.name: dims for info in infos if is_resolved(dims := dims_of(info.type))}
