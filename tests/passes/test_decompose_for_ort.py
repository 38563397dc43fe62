"""DecomposeForOrtPass: each rewritten op computes what onnxruntime computes for the original op."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

from llcompile.passes.decompose_for_ort import REWRITES, DecomposeForOrtPass
from llcompile.verify import session as ort_session

# HardSigmoid with its defaults, with MobileNetV3's (torch's) constants, and HardSwish.
CASES = [("HardSigmoid", {}), ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
         ("HardSigmoid", {"alpha": 0.3, "beta": 0.1}), ("HardSwish", {})]


def _model(op_type: str, attrs: dict, output_is_op: bool) -> onnx.ModelProto:
    """x [N,3,4] -> op -> (y directly, or y = Relu(op) with the op's output also read by a Sigmoid)."""
    nodes = [helper.make_node(op_type, ["x"], ["h"], name="act", **attrs)]
    outputs = ["h"] if output_is_op else ["y", "z"]
    if not output_is_op:
        nodes += [helper.make_node("Relu", ["h"], ["y"], name="relu"),
                  helper.make_node("Sigmoid", ["h"], ["z"], name="sigmoid")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", 3, 4]) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _decomposed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    result = DecomposeForOrtPass()(ir.serde.deserialize_model(model))
    return ir.serde.serialize_model(result.model), result.modified


def _inputs() -> np.ndarray:
    """Values across both kinks of each case, the kinks themselves included."""
    values = np.concatenate([np.linspace(-7, 7, 60), [-3.0, 3.0, -2.5, 2.5, 0.0, 1 / 3, -5 / 3]])
    return values[: 2 * 3 * 4 * (len(values) // 24)].reshape(-1, 3, 4).astype(np.float32)


@pytest.mark.parametrize("output_is_op", [True, False])
@pytest.mark.parametrize("op_type,attrs", CASES)
def test_decomposition_matches_onnxruntime_on_the_original_op(op_type, attrs, output_is_op):
    model = _model(op_type, attrs, output_is_op)
    decomposed, modified = _decomposed(model)
    onnx.checker.check_model(decomposed, full_check=True)
    assert modified
    assert not {n.op_type for n in decomposed.graph.node} & set(REWRITES)
    assert [o.name for o in decomposed.graph.output] == [o.name for o in model.graph.output]
    x = _inputs()
    expected = ort_session(model).run(None, {"x": x})
    actual = ort_session(decomposed).run(None, {"x": x})
    for e, a in zip(expected, actual, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


def test_new_names_avoid_the_names_already_in_the_graph():
    """The input and the first node's output are named as the pass would name its new values."""
    nodes = [helper.make_node("HardSwish", ["act.0.Constant.out"], ["act.4.Mul.out"], name="act"),
             helper.make_node("HardSwish", ["act.4.Mul.out"], ["b"], name="act.4.Mul")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("act.0.Constant.out", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    decomposed, _ = _decomposed(model)
    onnx.checker.check_model(decomposed, full_check=True)
    names = [n.name for n in decomposed.graph.node]
    assert len(names) == len(set(names))
    x = {"act.0.Constant.out": _inputs()}
    np.testing.assert_allclose(ort_session(decomposed).run(None, x)[0], ort_session(model).run(None, x)[0],
                               rtol=1e-6, atol=1e-6)


def test_a_model_without_such_ops_is_left_alone():
    model = _model("Relu", {}, output_is_op=False)
    decomposed, modified = _decomposed(model)
    assert not modified
    assert [n.op_type for n in decomposed.graph.node] == [n.op_type for n in model.graph.node]


# --- the transformer ops' entries: Gelu (ORT's gradient ignores approximate="tanh"), ReduceMax/Min

def _single_op_model(op_type: str, inputs: list, attrs: dict, shape: list, opset: int,
                     initializers=()) -> onnx.ModelProto:
    nodes = [helper.make_node(op_type, ["x", *inputs], ["y"], name="op", **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _axes(values) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.array(values, np.int64), "axes")


TRANSFORMER_CASES = {
    "gelu": ("Gelu", [], {}, 20, ()),
    "gelu-tanh": ("Gelu", [], {"approximate": "tanh"}, 20, ()),
    "reducemax-spatial": ("ReduceMax", ["axes"], {}, 18, (_axes([2, 3]),)),
    "reducemax-middle-dropped": ("ReduceMax", ["axes"], {"keepdims": 0}, 18, (_axes([1, -1]),)),
    "reducemin-all": ("ReduceMin", [], {"keepdims": 0}, 18, ()),
    "reducemax-attribute": ("ReduceMax", [], {"axes": [1]}, 17, ()),
}


@pytest.mark.parametrize("case", TRANSFORMER_CASES)
def test_transformer_op_decomposition_matches_onnxruntime(case):
    op_type, inputs, attrs, opset, inits = TRANSFORMER_CASES[case]
    model = _single_op_model(op_type, inputs, attrs, ["N", 3, 4, 5], opset, inits)
    decomposed, modified = _decomposed(model)
    onnx.checker.check_model(decomposed, full_check=True)
    assert modified and op_type not in {n.op_type for n in decomposed.graph.node}
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32) * 3
    expected = ort_session(model).run(None, {"x": x})[0]
    actual = ort_session(decomposed).run(None, {"x": x})[0]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
