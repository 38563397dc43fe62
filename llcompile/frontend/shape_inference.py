"""ONNX shape inference on an onnx_ir model, its results stored in the model."""

from __future__ import annotations

import math

import onnx
import onnx_ir as ir

from llcompile.errors import LLCompileError

# initializers above this many elements are passed to shape inference by type only
LARGE_INITIALIZER = 1024


def infer_shapes(model: ir.Model, source: str = "model") -> None:
    """Run strict ONNX shape inference and store the inferred types and shapes in ``model``.

    Large initializers are handed to onnx as typed graph inputs, not as data, so that inference
    does not copy megabytes of weights (small ones stay: Reshape targets need their values).
    """
    proto = ir.to_proto(model)
    large = [t for t in proto.graph.initializer if math.prod(t.dims) > LARGE_INITIALIZER]
    for tensor in large:
        proto.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    kept = [t for t in proto.graph.initializer if math.prod(t.dims) <= LARGE_INITIALIZER]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError) as exc:
        raise LLCompileError(f"{source}: shape inference failed: {str(exc).strip().splitlines()[0][:300]}") from None
    types = {info.name: info.type for info in [*inferred.graph.value_info, *inferred.graph.output]}
    for node in model.graph:
        for value in node.outputs:
            if value.name in types:
                inferred_value = ir.serde.deserialize_value_info_proto(
                    onnx.helper.make_value_info(value.name, types[value.name]), None)
                value.type, value.shape = inferred_value.type, inferred_value.shape
