"""DynamicBatchPass: a model exported at a fixed batch runs at any batch and computes the same per sample."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.frontend.canonical.training_mode import TrainingModePass
from llcompile.models import export
from llcompile.frontend.canonical.dynamic_batch import BATCH_DIM, DynamicBatchPass
from llcompile.compiler.verify import run_model
from llcompile.util.ort_session import session as ort_session
from tests.fixtures import legacy_models as lm
from tests.fixtures.attention_graphs import INPUT_SHAPE, tiny_vit


def _reshape_model(batch: int = 1, target=(1, -1), allowzero: int | None = None) -> onnx.ModelProto:
    """x [batch,2,2,2] -> Relu -> Reshape(target) -> Gemm(8 -> 5) -> y [batch,5]."""
    rng = np.random.default_rng(0)
    attrs = {} if allowzero is None else {"allowzero": allowzero}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "target"], ["f"], name="reshape", **attrs),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(np.array(target, np.int64), "target"),
             numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "static", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _per_sample(original: onnx.ModelProto, x: np.ndarray, input_name: str, step: int = 1) -> np.ndarray:
    """The original (static-batch) model run on `step` samples at a time, concatenated."""
    session = ort_session(original)
    return np.concatenate([session.run(None, {input_name: x[i:i + step]})[0] for i in range(0, len(x), step)])


def _dims(value: ir.Value) -> list:
    return [d if isinstance(d, int) else str(d) for d in value.shape]


def _target(model: ir.Model, node_name: str = "reshape") -> list[int]:
    (node,) = [n for n in model.graph if n.name == node_name]
    return node.inputs[1].const_value.numpy().tolist()


# ---------------------------------------------------------------- the rewrite


def test_static_batch_becomes_symbolic():
    model = ir.from_proto(_reshape_model())
    result = DynamicBatchPass()(model)
    assert result.modified is True and result.model is model
    assert _dims(model.graph.inputs[0]) == [BATCH_DIM, 2, 2, 2]
    assert _dims(model.graph.outputs[0]) == [BATCH_DIM, 5]
    assert _target(model) == [0, -1]
    # inferred shapes of intermediate values are dropped, to be recomputed
    assert all(v.shape is None for n in model.graph for v in n.outputs if not v.is_graph_output())
    # the original constant is left as it was
    assert model.graph.initializers["target"].const_value.numpy().tolist() == [1, -1]


@pytest.mark.parametrize("batch, target, allowzero, expected", [
    (1, (1, -1), None, [0, -1]),
    (1, (1, -1), 0, [0, -1]),
    (1, (1, 8), None, [0, 8]),
    (1, (1, 8), 1, [-1, 8]),  # with allowzero=1 a 0 would mean "zero", so the batch becomes -1
    (2, (2, -1), None, [0, -1]),
    (2, (2, 8), 1, [-1, 8]),
])
def test_baked_reshape_target_is_rewritten(batch, target, allowzero, expected):
    original = _reshape_model(batch, target, allowzero)
    model = ir.from_proto(original)
    DynamicBatchPass()(model)
    assert _target(model) == expected
    # at a new batch size it computes what the original computes on its own batch size
    x = np.random.default_rng(1).standard_normal((6, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(ort_session(model).run(None, {"x": x})[0], _per_sample(original, x, "x", batch),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", [(-1, 8), (0, 8)])
def test_target_not_starting_with_the_batch_is_kept(target):
    model = ir.from_proto(_reshape_model(batch=1, target=target))
    (node,) = [n for n in model.graph if n.name == "reshape"]
    before = node.inputs[1]
    DynamicBatchPass()(model)
    assert node.inputs[1] is before


def test_allowzero_with_inferred_dim_is_rewritten_or_refused():
    original = _reshape_model(batch=1, target=(1, -1), allowzero=1)
    model = ir.from_proto(original)
    try:
        DynamicBatchPass()(model)
    except LLCompileError:
        return
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(ort_session(model).run(None, {"x": x})[0], _per_sample(original, x, "x"),
                               rtol=1e-5, atol=1e-6)


def test_shared_reshape_target():
    nodes = [helper.make_node("Reshape", ["x", "target"], ["f1"], name="reshape1"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "target"], ["f2"], name="reshape2"),
             helper.make_node("Add", ["f1", "f2"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(np.array([1, -1], np.int64), "target")])
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    original.ir_version = 8
    model = ir.from_proto(original)
    DynamicBatchPass()(model)
    assert _target(model, "reshape1") == _target(model, "reshape2") == [0, -1]
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(ort_session(model).run(None, {"x": x})[0], _per_sample(original, x, "x"), rtol=1e-6)


@pytest.mark.parametrize("build", [lm.small_cnn, lm.matmul_mlp, lm.bn_training_mode_model])
def test_already_dynamic_is_not_modified(build):
    model = ir.from_proto(build())
    before = ir.to_proto(model).SerializeToString()
    assert DynamicBatchPass()(model).modified is False
    assert ir.to_proto(model).SerializeToString() == before


# ---------------------------------------------------------------- the legacy Caffe2 model


@pytest.mark.parametrize("global_pool", [False, True])
def test_legacy_caffe_model_runs_at_any_batch(global_pool):
    original = lm.legacy_caffe_style(global_pool=global_pool)
    assert [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    model = canonicalize(original)
    assert _dims(model.graph.inputs[0]) == [BATCH_DIM, 3, 32, 32]
    assert _dims(model.graph.outputs[0]) == [BATCH_DIM, 10]
    produced = {v.name: v for n in model.graph for v in n.outputs}
    assert _dims(produced["flat_1"]) == [BATCH_DIM, 16]  # re-inferred with the symbolic batch
    if not global_pool:
        (reshape,) = [n for n in model.graph if n.op_type == "Reshape"]
        assert reshape.inputs[1].const_value.numpy().tolist() == [0, -1]
    TrainingModePass(training=False)(model)  # the original runs BN on running statistics
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    batched = ort_session(model).run(None, {"data_0": x})[0]
    assert batched.shape == (3, 10)
    np.testing.assert_allclose(batched, _per_sample(original, x, "data_0"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode,opset", [("eval", 17), ("dynamo", 18)])
def test_a_class_token_exported_at_batch_one_is_expanded_to_any_batch(tmp_path, mode, opset):
    """``cls.expand(n, -1, -1)`` exported at batch 1 is a [1,1,D] constant joined to the tokens; it must
    follow the batch again, and still be trained."""
    module = tiny_vit()
    path = export(module, tmp_path / "vit.onnx", input_shape=INPUT_SHAPE, mode=mode, opset=opset, batch_size=1)
    model = llcompile.load(path)
    x = np.random.default_rng(0).standard_normal((3, *INPUT_SHAPE)).astype(np.float32)
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_model(ir.to_proto(model), x), expected, rtol=1e-5, atol=1e-5)
    (stage,) = llcompile.transform(model, "bp").stages
    trained = {t.name: onnx.numpy_helper.to_array(t) for t in stage.model.graph.initializer if t.name in stage.params}
    token = module.cls_token.detach().numpy()
    assert any(v.shape == token.shape and np.array_equal(v, token) for v in trained.values())
