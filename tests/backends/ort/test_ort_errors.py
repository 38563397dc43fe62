"""onnxruntime's failures reach the user as one line naming the stage, the op or node, and the cause."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.artifacts import stage_artifacts
from llcompile.backends.ort.backend import OrtBackend
from llcompile.backends.ort.hebbian import OrtHebbianStage
from llcompile.errors import LLCompileError


def _stage_with(op: str):
    """input [N,4] -> Gemm(W) -> op -> loss: a stage graph whose op sits on the gradient path."""
    nodes = [helper.make_node("Gemm", ["input", "W"], ["h"], name="fc"),
             helper.make_node(op, ["h"], ["logits"], name="rounding"),
             helper.make_node("SoftmaxCrossEntropyLoss", ["logits", "labels"], ["loss"], name="loss")]
    graph = helper.make_graph(nodes, "block0", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4]),
                                                helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"])],
                              [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
                              [numpy_helper.from_array(np.ones((4, 3), np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_an_op_without_a_gradient_is_named_on_one_line(tmp_path):
    with pytest.raises(LLCompileError) as caught:
        stage_artifacts(_stage_with("Round"), ["W"], [], tmp_path)
    message = str(caught.value)
    assert message == ("onnxruntime-training cannot build the training graph of 'block0' (the torch backend may "
                       "train it): no gradient for Round (node 'rounding')")


def test_a_failing_training_step_is_one_line_naming_the_stage_and_node(tmp_path, zoo_file):
    """A batch of the wrong size for the input: ORT's kernel error, not an internal error."""
    program = llcompile.transform(zoo_file("small_cnn", input_shape=(3, 16, 16)), strategy="bp")
    (stage,) = OrtBackend(cache_dir=tmp_path).build(program, OptimizerConfig(name="sgd"))
    x = np.zeros((4, 3, 16, 15), np.float32)
    with pytest.raises(LLCompileError) as caught:
        stage.train_step(x, np.zeros(4, np.int64), 0.1)
    message = str(caught.value)
    assert message.startswith(f"stage {program.stages[0].name}: onnxruntime-training failed in a training step: ")
    assert "\n" not in message and "onnxruntime_src" not in message and "::" not in message



def test_a_failing_hebbian_step_is_one_line_naming_the_stage(zoo_file):
    program = llcompile.transform(zoo_file("small_cnn", input_shape=(3, 16, 16)), "local-sgd", prefix=1)
    hebbian = OrtHebbianStage(program.stages[0])
    with pytest.raises(LLCompileError) as caught:
        hebbian.train_step(np.zeros((4, 3, 16, 15), np.float32), np.zeros(4, np.int64), 0.1)
    message = str(caught.value)
    assert message.startswith(f"stage {program.stages[0].name}: onnxruntime failed: Got invalid dimensions")
    assert "onnxruntime_src" not in message and "::" not in message
