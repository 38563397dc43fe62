import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from llcompile.errors import LLCompileError
from llcompile.frontend.canonical.fold_constants import FoldConstantsPass
from llcompile.compiler.verify import run_model


def _model(nodes, initializers, out_shape=(2, 4)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_computed_in_the_graph_becomes_an_initializer():
    w = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    proto = _model([helper.make_node("Transpose", ["w_t"], ["w"], perm=[1, 0]),
                    helper.make_node("MatMul", ["x", "w"], ["y"])], [numpy_helper.from_array(w.T.copy(), "w_t")])
    model = ir.from_proto(proto)
    result = FoldConstantsPass()(model)
    assert result.modified
    assert [n.op_type for n in model.graph] == ["MatMul"]
    folded = model.graph.initializers["w"].const_value.numpy()
    np.testing.assert_array_equal(folded, w)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(run_model(ir.to_proto(model), x), run_model(proto, x), rtol=1e-6)
    assert not FoldConstantsPass()(model).modified


def test_constant_of_shape_weights_fold():
    proto = _model([helper.make_node("ConstantOfShape", ["shape"], ["w"],
                                     value=numpy_helper.from_array(np.array([0.5], np.float32))),
                    helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [numpy_helper.from_array(np.array([3, 4], np.int64), "shape")])
    model = ir.from_proto(proto)
    FoldConstantsPass()(model)
    np.testing.assert_array_equal(model.graph.initializers["w"].const_value.numpy(), np.full((3, 4), 0.5, np.float32))


def test_data_dependent_nodes_stay():
    proto = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])],
                   [numpy_helper.from_array(np.ones((3, 4), np.float32), "w")])
    model = ir.from_proto(proto)
    assert not FoldConstantsPass()(model).modified
    assert [n.op_type for n in model.graph] == ["Relu", "MatMul"]


def test_unevaluable_constant_is_a_user_error():
    proto = _model([helper.make_node("Reshape", ["w0", "bad_shape"], ["w"]),
                    helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [numpy_helper.from_array(np.ones(12, np.float32), "w0"),
                    numpy_helper.from_array(np.array([5, 5], np.int64), "bad_shape")])
    with pytest.raises(LLCompileError, match="cannot evaluate constant node"):
        FoldConstantsPass()(ir.from_proto(proto))
