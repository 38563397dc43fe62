"""FlattenViewPass: TorchScript's ``x.view(x.size(0), -1)`` becomes ``Flatten(x, axis=1)``, only when it is one."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from llcompile.frontend.importer import canonicalize
from llcompile.frontend.canonical.flatten_view import FlattenViewPass
from llcompile.util.ort_session import session as ort_session
from tests.fixtures import legacy_models as lm

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Constant"}


def _run(model, x: np.ndarray, input_name: str) -> np.ndarray:
    return ort_session(model).run(None, {input_name: x})[0]


def _view_model(shape_of: str = "x", shape_attrs: dict | None = None, index=0, rest=(-1,),
                reshape_is_output: bool = False) -> onnx.ModelProto:
    """inp [N,4,2,2] -> x = Relu(inp), other = Sigmoid(inp);
    Reshape(x, Concat(Unsqueeze(Gather(Shape(<shape_of>), index), [0]), rest)) -> f [-> Tanh -> y]."""
    nodes = [
        helper.make_node("Relu", ["inp"], ["x"], name="relu"),
        helper.make_node("Sigmoid", ["inp"], ["other"], name="sigmoid"),
        helper.make_node("Shape", [shape_of], ["s"], name="shape", **(shape_attrs or {})),
        helper.make_node("Gather", ["s", "index"], ["g"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["g", "axes"], ["u"], name="unsqueeze"),
        helper.make_node("Concat", ["u", "rest"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["f"], name="view"),
    ]
    if not reshape_is_output:
        nodes.append(helper.make_node("Tanh", ["f"], ["y"], name="tanh"))
    inits = [numpy_helper.from_array(np.array(index, np.int64), "index"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array(rest, np.int64), "rest")]
    out = "f" if reshape_is_output else "y"
    graph = helper.make_graph(nodes, "view", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, ["N", 4, 2, 2])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                             [f"d{i}" for i in range(1 + len(rest))])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def _x(batch: int = 3, shape=(4, 2, 2), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


# ---------------------------------------------------------------- through canonicalize


def test_canonical_model_has_flatten_instead_of_view():
    original = lm.flatten_via_shape_ops()
    assert "Reshape" in {n.op_type for n in original.graph.node}
    model = canonicalize(original)
    ops = _ops(model)
    assert "Reshape" not in ops and not SHAPE_OPS & set(ops)
    (flatten,) = [n for n in model.graph if n.op_type == "Flatten"]
    assert flatten.attributes["axis"].as_int() == 1
    assert flatten.inputs[0].name == "/pool2/MaxPool_output_0"
    out = flatten.outputs[0]
    assert out.name == "/Reshape_output_0"  # the rewritten value keeps its name
    assert out.shape[1] == 8 * 4 * 4 and not isinstance(out.shape[0], int)  # static features, symbolic batch
    (gemm,) = [n for n in model.graph if n.op_type == "Gemm"]
    assert gemm.inputs[0] is out
    x = _x(3, (3, 16, 16))
    np.testing.assert_allclose(_run(model, x, "input"), _run(original, x, "input"), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the pass itself


def test_view_pattern_is_rewritten():
    original = _view_model()
    model = ir.from_proto(original)
    result = FlattenViewPass()(model)
    assert result.modified is True and result.model is model
    (flatten,) = [n for n in model.graph if n.op_type == "Flatten"]
    assert "Reshape" not in _ops(model)
    assert flatten.inputs[0].name == "x" and flatten.attributes["axis"].as_int() == 1
    assert flatten.name == "view" and flatten.outputs[0].name == "f"
    assert [u.node.op_type for u in flatten.outputs[0].uses()] == ["Tanh"]
    x = _x()
    np.testing.assert_allclose(_run(model, x, "inp"), _run(original, x, "inp"), rtol=1e-6)
    assert FlattenViewPass()(model).modified is False  # nothing left to rewrite


def test_view_as_graph_output_keeps_the_output_name():
    original = _view_model(reshape_is_output=True)
    model = ir.from_proto(original)
    assert FlattenViewPass()(model).modified is True
    assert [v.name for v in model.graph.outputs] == ["f"]
    assert model.graph.outputs[0].producer().op_type == "Flatten"
    x = _x()
    np.testing.assert_allclose(_run(model, x, "inp"), _run(original, x, "inp"), rtol=1e-6)


def test_batch_read_from_the_model_input_is_rewritten():
    original = _view_model(shape_of="inp")
    model = ir.from_proto(original)
    assert FlattenViewPass()(model).modified is True
    assert "Reshape" not in [n.op_type for n in model.graph]
    x = _x()
    np.testing.assert_allclose(_run(model, x, "inp"), _run(original, x, "inp"), rtol=1e-6)


@pytest.mark.parametrize("variant", [
    dict(shape_of="other"),   # the batch size is read from a different tensor
    dict(index=1),            # [x.size(1), -1] is not a flatten
    dict(rest=(2, -1)),       # [x.size(0), 2, -1] keeps three dims
    dict(rest=(16,)),         # [x.size(0), 16]: a constant feature size, not -1
])
def test_other_reshapes_are_not_rewritten(variant):
    original = _view_model(**variant)
    model = ir.from_proto(original)
    before = _ops(model)
    assert FlattenViewPass()(model).modified is False
    assert _ops(model) == before
    x = _x()
    np.testing.assert_allclose(_run(model, x, "inp"), _run(original, x, "inp"), rtol=1e-6)


def test_shape_with_start_is_not_the_batch():
    original = _view_model(shape_attrs={"start": 1})
    model = ir.from_proto(original)
    FlattenViewPass()(model)
    x = _x(batch=2)  # view(x.size(1), -1) on [2,4,2,2] gives [4,8]; Flatten gives [2,16]
    np.testing.assert_allclose(_run(model, x, "inp"), _run(original, x, "inp"), rtol=1e-6)


def test_constants_as_nodes_are_recognised_once_lifted():
    """The fixture writes the indices as Constant nodes; canonicalize lifts them to initializers first."""
    model = ir.from_proto(lm.flatten_via_shape_ops())
    ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    assert FlattenViewPass()(model).modified is True
    assert "Reshape" not in _ops(model)
