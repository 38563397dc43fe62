"""Inputs that break naive compilers: name clashes with what llcompile adds, Dropout in training
form, failing shape inference, other dtypes, weights on the left, shape arithmetic on the input."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.compiler.verify import verify
from tests.fixtures import legacy_models as legacy


def _renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.name == old:
            value.name = new
    for tensor in model.graph.initializer:
        if tensor.name == old:
            tensor.name = new
    return model


@pytest.mark.parametrize("old, new", [
    ("logits", "loss"),  # the model's output is called like llcompile's loss
    ("input", "labels"),  # the model's input is called like llcompile's labels
    ("/pool/MaxPool_output_0", "block1.aux_loss"),
    ("fc.weight", "aux@/pool/MaxPool_output_0.fc.weight"),
])
def test_names_llcompile_adds_never_clash(save_model, tmp_path, old, new):
    source = _renamed(legacy.small_cnn(), old, new)
    onnx.checker.check_model(source)
    path = save_model(source)
    cut = "block1.aux_loss" if new == "block1.aux_loss" else "/pool/MaxPool_output_0"
    program = llcompile.transform(path, "dbl", cuts=[cut])
    final, first = program.stages[-1], program.stages[0]
    assert final.loss != final.output and first.loss != first.output and final.labels != program.input["name"]
    assert "SoftmaxCrossEntropyLoss" in [n.op_type for n in final.model.graph.node]
    assert "SoftmaxCrossEntropyLoss" in [n.op_type for n in first.model.graph.node]
    program.save(tmp_path / "prog")
    assert verify(tmp_path / "prog").worst < 1e-5


class _DropoutNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.conv(x)).flatten(1)))


def test_dropout_exported_in_training_mode(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "dropout.onnx"
    torch.onnx.export(_DropoutNet().train(), (torch.randn(2, 3, 8, 8),), path, dynamo=False, opset_version=17,
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    program = llcompile.transform(path, "dbl", blocks=2)
    eval_ops = {n.op_type: n for n in program.eval_model.graph.node}
    assert len(eval_ops["Dropout"].input) <= 2  # no training_mode: the identity at inference
    final_dropouts = [n for n in program.stages[-1].model.graph.node if n.op_type == "Dropout"] or \
        [n for n in program.stages[0].model.graph.node if n.op_type == "Dropout"]
    assert len(final_dropouts[0].input) == 3  # stage graphs train with dropout on
    program.save(tmp_path / "prog")
    assert verify(tmp_path / "prog").worst < 1e-5


def test_shape_inference_failure_is_one_clear_error(save_model):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["c", "x8"], ["cat"], name="cat", axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
         numpy_helper.from_array(np.ones((1, 2, 5, 5), np.float32), "x8"),  # 5x5 cannot join 8x8
         numpy_helper.from_array(np.ones((4, 6), np.float32), "fc")])
    with pytest.raises(llcompile.LLCompileError, match="shape inference failed"):
        llcompile.load(save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def test_float64_model_is_refused(save_model):
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 3])],
                              [numpy_helper.from_array(np.ones((4, 3)), "w")])
    with pytest.raises(llcompile.LLCompileError, match="double.*float32"):
        llcompile.load(save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


def test_weight_on_the_left_is_refused(save_model):
    graph = helper.make_graph([helper.make_node("MatMul", ["w", "x"], ["y"], name="left")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, "N"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "N"])],
                              [numpy_helper.from_array(np.ones((3, 4), np.float32), "w")])
    with pytest.raises(llcompile.LLCompileError, match="first operand"):
        llcompile.load(save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))


class _ViewOfInputBatch(torch.nn.Module):
    """`n = x.shape[0]` taken from the model input and used in the head's view."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        n = x.shape[0]
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).reshape(n, -1))


def test_batch_size_taken_from_the_input_does_not_remove_cut_points(tmp_path):
    path = tmp_path / "view.onnx"
    torch.onnx.export(_ViewOfInputBatch(), (torch.randn(2, 3, 8, 8),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}})
    analysis = llcompile.analyze(llcompile.load(path))
    assert len(analysis.cut_points) == 2
    llcompile.transform(path, "dbl", blocks=3).save(tmp_path / "prog")
    assert verify(tmp_path / "prog").worst < 1e-5
