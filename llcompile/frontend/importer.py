"""Load an ONNX file and bring it into the canonical form every pass expects.

Canonical form: opset in [MIN_OPSET, MAX_OPSET], one data input with a symbolic batch, one
output, constants as initializers (not also listed as inputs), unique names, topological
order, inferred shapes, BatchNormalization in training form, only supported ops.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError
from onnx import external_data_helper, version_converter
from onnx_ir.passes import common as ir_common

from llcompile.errors import ModelError
from llcompile.frontend.canonical.training_mode import TrainingModePass
from llcompile.frontend.canonical.dynamic_batch import DynamicBatchPass
from llcompile.frontend.canonical.flatten_view import FlattenViewPass
from llcompile.frontend.canonical.fold_constants import FoldConstantsPass
from llcompile.frontend.pass_pipeline import run_passes
from llcompile.frontend.canonical.static_shape_dims import StaticShapeDimsPass
from llcompile.frontend.shape_inference import infer_shapes
from llcompile.ops import SUPPORTED_OPS
from llcompile.ops.registry import MAX_OPSET, MIN_OPSET

# onnxruntime 1.19 refuses newer IR versions ("Unsupported model IR version").
IR_VERSION = 10


# what llcompile.load (and transform, analyze, the report) take as a model
ModelSource = str | os.PathLike | bytes | onnx.ModelProto | ir.Model


def load(model: ModelSource) -> ir.Model:
    """Read, check and canonicalise a model: the path of an ONNX file (its external data read from
    inside its folder only), the file's bytes, an ``onnx.ModelProto`` or an ``onnx_ir.Model``. All four
    are canonicalised the same way, and the caller's object is not changed."""
    return canonicalize(*read_source(model))


def read_source(model: ModelSource) -> tuple[onnx.ModelProto, str]:
    """``model`` as it was given, as a proto of its own (the caller's object is not changed), and how
    messages name it."""
    if isinstance(model, (str, os.PathLike)):
        return read_model_proto(model), str(model)
    if isinstance(model, ir.Model):
        return ir.to_proto(model), "the onnx_ir.Model"
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return _in_memory(copy, "the ModelProto"), "the ModelProto"
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_model_from_string(bytes(model))
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"the model bytes: not a readable ONNX model ({_first_line(exc)})") from None
        return _in_memory(proto, "the model bytes"), "the model bytes"
    raise ModelError(f"a model is the path of an ONNX file, its bytes, an onnx.ModelProto or an onnx_ir.Model, "
                     f"not {type(model).__name__}")


def _in_memory(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """A model given in memory: it must have nodes, and no external data (there is no folder to read it from)."""
    if not proto.graph.node:
        raise ModelError(f"{source}: not an ONNX model (no graph nodes)")
    external = next((t.name for t in external_data_helper._get_all_tensors(proto)
                     if external_data_helper.uses_external_data(t)), None)
    if external is not None:
        raise ModelError(f"{source}: tensor {external!r} keeps its data in an external file; "
                         "give the model's path instead, so the data is read from its folder")
    return proto


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse the file; load external data only from inside the model's own folder."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes; truncated or another format?)")
    base = path.resolve().parent
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (base / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(base):
            raise ModelError(
                f"{path}: external data {location!r} of tensor {tensor.name!r} lies outside the model's folder")
        if not target.is_file():
            raise ModelError(f"{path}: external data file {location!r} is missing")
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read external data ({_first_line(exc)})") from None
    return proto


def canonicalize(proto: onnx.ModelProto, source: str = "model") -> ir.Model:
    """Check, upgrade and normalise a model; raise ModelError naming what is wrong."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"{source}: fails the ONNX checker: {_first_line(exc)}") from None
    proto = _convert_opset(proto, source)
    model = ir.from_proto(proto)
    model = run_passes([
        ir_common.RemoveInitializersFromInputsPass(),
        ir_common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        FoldConstantsPass(),
        FlattenViewPass(),
        DynamicBatchPass(),
        ir_common.RemoveUnusedNodesPass(),
        ir_common.NameFixPass(),
        TrainingModePass(training=True),
        ir_common.TopologicalSortPass(),
        StaticShapeDimsPass(source),
        ir_common.RemoveUnusedNodesPass(),
    ], model).model
    _refuse_unsupported(model, source)  # after folding: constant subgraphs may use any op
    model.ir_version = IR_VERSION
    infer_shapes(model, source)
    _check_interface(model, source)
    return model


def _convert_opset(proto: onnx.ModelProto, source: str) -> onnx.ModelProto:
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelError(f"{source}: the model imports no standard ONNX opset")
    if opset > MAX_OPSET:
        raise ModelError(
            f"{source}: opset {opset} is newer than the newest supported ({MAX_OPSET}); "
            f"re-export with opset <= {MAX_OPSET}")
    if opset >= MIN_OPSET:
        return proto
    _drop_unused_batchnorm_outputs(proto)
    try:
        converted = version_converter.convert_version(proto, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises bare RuntimeError/ValueError per adapter
        raise ModelError(
            f"{source}: cannot upgrade opset {opset} to {MIN_OPSET}: {_first_line(exc)}") from None
    return converted


def _drop_unused_batchnorm_outputs(proto: onnx.ModelProto) -> None:
    """Old BatchNormalization may list saved mean/var outputs that opset 14 no longer has."""
    used = {name for node in proto.graph.node for name in node.input} | {v.name for v in proto.graph.output}
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization" and not any(name in used for name in node.output[1:]):
            del node.output[1:]


def _refuse_unsupported(model: ir.Model, source: str) -> None:
    unsupported = sorted({n.op_type for n in model.graph.all_nodes()
                          if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS})
    if unsupported:
        raise ModelError(
            f"{source}: unsupported op(s) for training: {', '.join(unsupported)} "
            "(see docs/ops.md for the supported list)")


def _check_interface(model: ir.Model, source: str) -> None:
    data_inputs = [v for v in model.graph.inputs if v.const_value is None]
    if len(data_inputs) != 1:
        raise ModelError(
            f"{source}: expected one data input, found {len(data_inputs)} "
            f"({', '.join(v.name for v in data_inputs)})")
    if len(model.graph.outputs) != 1:
        raise ModelError(
            f"{source}: expected one output (the class logits), found {len(model.graph.outputs)} "
            f"({', '.join(v.name for v in model.graph.outputs)})")
    for value in (data_inputs[0], model.graph.outputs[0]):
        if value.dtype != ir.DataType.FLOAT:
            raise ModelError(f"{source}: {value.name!r} is {value.dtype.name.lower()}; llcompile trains "
                             "float32 models (convert the model to float32 first)")
    for node in model.graph:
        if node.op_type == "Reshape" and _reshapes_a_dynamic_size_to_a_fixed_one(node):
            raise ModelError(f"{source}: Reshape {node.name!r} turns {_dims(node.inputs[0].shape)} into the fixed "
                             f"{_dims(node.outputs[0].shape)}: the export baked its batch size into the target; "
                             "re-export with a dynamic batch (torch.onnx.export(..., dynamic_shapes=...))")
        if node.op_type in ("Gemm", "MatMul") and node.inputs[0].const_value is not None \
                and node.inputs[1].const_value is None:
            raise ModelError(f"{source}: {node.op_type} {node.name!r} has its weight as the first operand "
                             "(W @ x); only x @ W layers can be trained")


def _reshapes_a_dynamic_size_to_a_fixed_one(node: ir.Node) -> bool:
    """A constant target without 0 or -1 fixes the element count, which a symbolic input dim (the batch) varies."""
    data, target = node.inputs[0], node.inputs[1]
    if target is None or target.const_value is None or data.shape is None:
        return False
    dims = target.const_value.numpy()
    return not ((dims == 0) | (dims == -1)).any() and not all(isinstance(d, int) for d in data.shape)


def _dims(shape: ir.Shape | None) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]" if shape is not None else "[?]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
