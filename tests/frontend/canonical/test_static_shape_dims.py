"""StaticShapeDimsPass: static dims read at run time become constants; the batch stays dynamic."""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.frontend.canonical.static_shape_dims import StaticShapeDimsPass
from llcompile.compiler.verify import run_model
from tests.fixtures.attention_graphs import EXPORTS, INPUT_SHAPE


def view_by_heads_model() -> onnx.ModelProto:
    """x [N,4,6] -> Reshape to [n, t, 2, d // 2] (n, t, d read with Shape/Gather, d // 2 as Div + Cast)."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"])]
    for i, name in enumerate("ntd"):
        nodes.append(helper.make_node("Gather", ["shape", f"i{i}"], [name], axis=0))
    nodes += [helper.make_node("Div", ["d", "two"], ["half"]),
              helper.make_node("Cast", ["half"], ["half_int"], to=TensorProto.INT64)]
    for name in ("n", "t", "half_int"):
        nodes.append(helper.make_node("Unsqueeze", [name, "axis0"], [f"{name}1"]))
    nodes += [helper.make_node("Concat", ["n1", "t1", "two1", "half_int1"], ["target"], axis=0),
              helper.make_node("Reshape", ["x", "target"], ["heads"]),
              helper.make_node("Relu", ["heads"], ["y"])]
    constants = {"i0": np.array(0, np.int64), "i1": np.array(1, np.int64), "i2": np.array(2, np.int64),
                 "two": np.array(2, np.int64), "axis0": np.array([0], np.int64), "two1": np.array([2], np.int64)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_static_dims_become_constants_and_the_batch_stays_read():
    model = view_by_heads_model()
    ir_model = ir.from_proto(model)
    assert StaticShapeDimsPass()(ir_model).modified
    heads = next(n for n in ir_model.graph if n.op_type == "Reshape").outputs[0]
    assert list(heads.shape)[1:] == [4, 2, 3] and not isinstance(heads.shape[0], int)
    gathers = [n for n in ir_model.graph if n.op_type == "Gather"]
    assert [int(g.inputs[1].const_value.numpy()) for g in gathers] == [0]  # only the batch is still read
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 4, 6)).astype(np.float32)
        np.testing.assert_array_equal(run_model(ir.to_proto(ir_model), x), run_model(model, x))


def test_a_model_without_shape_reads_is_left_alone():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert not StaticShapeDimsPass()(ir.from_proto(model)).modified


@pytest.mark.parametrize("kind", EXPORTS)
def test_every_attention_tensor_has_static_dims_but_the_batch(tiny_vit_file, kind):
    """One symbolic dim (the batch, which a permute may move) per float tensor. Known gap: TorchScript
    lowers the class token's ``expand(n, -1, -1)`` through Where/Equal, which shape inference does not
    follow; that Expand and the Concat after it keep an unknown token count (the positional
    embedding's Add restores it)."""
    path, _ = tiny_vit_file(kind)
    model = llcompile.load(path)
    token_ops = {"Expand", "Concat"} if kind.startswith("torchscript") else set()
    checked = [v for node in llcompile.analysis.structure.data_dependent_nodes(model.graph) for v in node.outputs
               if v.dtype == ir.DataType.FLOAT and node.op_type not in token_ops]
    assert len(checked) > 50
    for value in checked:
        assert value.shape is not None, value.name
        assert sum(not isinstance(d, int) for d in value.shape) == 1, (value.name, value.shape)
    for batch in (1, 5):  # any batch, not the exported one (2)
        x = np.random.default_rng(batch).standard_normal((batch, *INPUT_SHAPE)).astype(np.float32)
        np.testing.assert_allclose(run_model(ir.to_proto(model), x), run_model(onnx.load(path), x),
                                   rtol=1e-5, atol=1e-6)
