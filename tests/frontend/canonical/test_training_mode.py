"""TrainingModePass: training form (batch statistics, 3 outputs) <-> inference form (running statistics)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.frontend.canonical.training_mode import TrainingModePass
from tests.fixtures import legacy_models as lm

C = 3
EPS = 1e-3
RNG = np.random.default_rng(42)
PARAMS = {  # distinct values: no two initializers are equal
    "scale": RNG.uniform(0.5, 1.5, C), "bias": RNG.normal(0, 0.5, C),
    "mean": RNG.normal(0, 0.5, C), "var": RNG.uniform(0.5, 1.5, C),
}


def _bn_model(training: bool = False, opset: int = 15, constant_scale: bool = True) -> onnx.ModelProto:
    """x [N,3,4,4] -> BatchNormalization -> Relu -> y."""
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in PARAMS.items()]
    nodes = []
    scale = "scale"
    if not constant_scale:  # the scale computed by a node (not an initializer)
        nodes.append(helper.make_node("Identity", ["scale"], ["scale_copy"], name="copy"))
        scale = "scale_copy"
    attrs = dict(epsilon=EPS, momentum=0.8)
    outputs = ["bn_out"]
    if training:
        attrs["training_mode"] = 1
        outputs += ["bn_rm", "bn_rv"]
    nodes.append(helper.make_node("BatchNormalization", ["x", scale, "bias", "mean", "var"], outputs, name="bn", **attrs))
    nodes.append(helper.make_node("Relu", ["bn_out"], ["y"], name="relu"))
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _bn(model: ir.Model) -> ir.Node:
    (node,) = [n for n in model.graph if n.op_type == "BatchNormalization"]
    return node


def _is_training_form(node: ir.Node) -> bool:
    attr = node.attributes.get("training_mode")
    return attr is not None and attr.as_int() == 1 and len(node.outputs) == 3


def _is_inference_form(node: ir.Node) -> bool:
    return "training_mode" not in node.attributes and len(node.outputs) == 1


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # ConstantSharing + training-mode BN is unsafe in ORT 1.19 (see test_aux_heads._session)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"], disabled_optimizers=["ConstantSharing"])
    return session.run(None, {"x": x})[0]


def _numpy_bn(x: np.ndarray, batch_stats: bool) -> np.ndarray:
    x = x.astype(np.float64)
    shape = (1, C, 1, 1)
    if batch_stats:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))  # biased variance
    else:
        mean, var = PARAMS["mean"], PARAMS["var"]
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS)
    y = y * PARAMS["scale"].reshape(shape) + PARAMS["bias"].reshape(shape)
    return np.maximum(y, 0.0)


# ---------------------------------------------------------------- forms


def test_inference_to_training_form():
    model = ir.from_proto(_bn_model(training=False))
    result = TrainingModePass(training=True)(model)
    assert result.modified is True and result.model is model
    node = _bn(model)
    assert _is_training_form(node)
    assert [o.name for o in node.outputs] == ["bn_out", "bn_out.running_mean", "bn_out.running_var"]
    attrs = {k: v.value for k, v in node.attributes.items()}
    assert attrs["momentum"] == pytest.approx(0.8) and attrs["epsilon"] == pytest.approx(EPS)
    assert [v.name for v in model.graph.outputs] == ["y"]  # statistics are not graph outputs
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_training_to_inference_form():
    model = ir.from_proto(lm.bn_training_mode_model())
    assert TrainingModePass(training=False)(model).modified is True
    node = _bn(model)
    assert _is_inference_form(node)
    assert node.outputs[0].name == "/bn1/BatchNormalization_output_0"
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("start_training", [True, False])
def test_idempotent(training, start_training):
    model = ir.from_proto(_bn_model(training=start_training))
    TrainingModePass(training=training)(model)
    before = ir.to_proto(model).SerializeToString()
    assert TrainingModePass(training=training)(model).modified is False
    assert ir.to_proto(model).SerializeToString() == before


def test_already_in_form_is_not_modified():
    assert TrainingModePass(training=True)(ir.from_proto(_bn_model(training=True))).modified is False
    assert TrainingModePass(training=False)(ir.from_proto(_bn_model(training=False))).modified is False


def test_model_without_batchnorm_is_not_modified():
    assert TrainingModePass(training=True)(ir.from_proto(lm.matmul_mlp())).modified is False


def test_opset7_spatial_attribute_is_dropped():
    model = ir.from_proto(lm.legacy_caffe_style(opset=8))
    assert "spatial" in _bn(model).attributes
    TrainingModePass(training=True)(model)
    assert "spatial" not in _bn(model).attributes and _is_training_form(_bn(model))


def test_canonical_models_are_in_training_form():
    assert _is_training_form(_bn(canonicalize(lm.legacy_caffe_style())))
    node = _bn(canonicalize(lm.bn_training_mode_model()))
    assert _is_training_form(node)


# ---------------------------------------------------------------- numerics


def test_round_trip_keeps_numerics():
    x = (np.random.default_rng(0).standard_normal((4, C, 4, 4)) * 2 + 0.7).astype(np.float32)
    model = canonicalize(_bn_model(training=False))
    assert _is_training_form(_bn(model))
    batch_reference = _numpy_bn(x, batch_stats=True)
    running_reference = _numpy_bn(x, batch_stats=False)
    assert np.abs(batch_reference - running_reference).max() > 0.1  # the two modes are distinguishable
    np.testing.assert_allclose(_run(model, x), batch_reference, rtol=1e-4, atol=1e-5)

    assert TrainingModePass(training=False)(model).modified is True
    assert _is_inference_form(_bn(model))
    np.testing.assert_allclose(_run(model, x), running_reference, rtol=1e-4, atol=1e-5)

    assert TrainingModePass(training=True)(model).modified is True
    assert _is_training_form(_bn(model))
    np.testing.assert_allclose(_run(model, x), batch_reference, rtol=1e-4, atol=1e-5)
    # the parameters themselves are untouched by the round trip
    for name, value in PARAMS.items():
        np.testing.assert_array_equal(model.graph.initializers[name].const_value.numpy(), value.astype(np.float32))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("training", [True, False])
def test_scale_not_an_initializer(training):
    model = ir.from_proto(_bn_model(training=not training, constant_scale=False))
    with pytest.raises(LLCompileError, match="'bn'.*constant"):
        TrainingModePass(training=training)(model)


def test_running_statistics_in_use_cannot_be_dropped():
    model = ir.from_proto(_bn_model(training=True))
    model.graph.outputs.append(_bn(model).outputs[1])
    with pytest.raises(LLCompileError, match="running statistics are used"):
        TrainingModePass(training=False)(model)


def test_scale_computed_from_constants_is_folded_by_canonicalize():
    model = canonicalize(_bn_model(constant_scale=False))
    assert _bn(model).inputs[1].const_value is not None and _is_training_form(_bn(model))


def test_scale_computed_from_the_data_is_refused_by_canonicalize():
    proto = _bn_model()
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    bn.input[1] = "data_scale"
    proto.graph.node.insert(0, helper.make_node("ReduceMean", ["x"], ["data_scale"], axes=[0, 2, 3], keepdims=0))
    with pytest.raises(LLCompileError, match="constant"):
        canonicalize(proto)
