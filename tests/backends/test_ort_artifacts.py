"""ORT training artifacts of graphs with decomposed ops: gradients against torch autograd.

Each graph is ``input [N,4,S,S] -> Conv(W) -> OP -> Flatten -> Gemm(F) -> loss`` with a symbolic
batch, which is what broke AveragePool's gradient kernel.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.training.api import CheckpointState, Module

from llcompile.backends.ort_artifacts import CHECKPOINT, EVAL_MODEL, TRAINING_MODEL, stage_artifacts

CHANNELS, CLASSES, BATCH = 4, 5, 6

# name -> (ONNX op and attributes, the same op in torch, input size, output size)
CASES = {
    "hardsigmoid": ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, F.hardsigmoid, 6, 6),
    "hardswish": ("HardSwish", {}, F.hardswish, 6, 6),
    "avgpool-2x2": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]},
                    lambda x: F.avg_pool2d(x, 2, 2), 6, 3),
    "avgpool-ceil-exclude-pad": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
                                 lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False), 7, 4),
    "avgpool-3x3-pad-exclude": ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                                lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), 7, 4),
    "avgpool-3x3-pad-include": ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
                                                "count_include_pad": 1},
                                lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=True), 5, 5),
}


def _graph(op: str, attrs: dict, size: int, out: int, weight: np.ndarray, fc: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["input", "W"], ["h"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["h"], ["a"], name="op", **attrs),
             helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "F"], ["logits"], name="fc", transB=1),
             helper.make_node("SoftmaxCrossEntropyLoss", ["logits", "labels"], ["loss"], name="loss")]
    graph = helper.make_graph(
        nodes, "stage", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", CHANNELS, size, size]),
                         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(fc, "F")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_decomposed_op_gradients_match_torch_autograd(case, tmp_path):
    op, attrs, torch_op, size, out = CASES[case]
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((CLASSES, CHANNELS * out * out)).astype(np.float32) * 0.3
    x = (3 * rng.standard_normal((BATCH, CHANNELS, size, size))).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH)

    directory = stage_artifacts(_graph(op, attrs, size, out, weight, fc), ["W", "F"], [], tmp_path)
    state = CheckpointState.load_checkpoint(str(directory / CHECKPOINT))
    module = Module(directory / TRAINING_MODEL, state, directory / EVAL_MODEL)
    module.train()
    loss = module(x, labels)

    w, f = torch.tensor(weight, requires_grad=True), torch.tensor(fc, requires_grad=True)
    hidden = torch_op(F.conv2d(torch.from_numpy(x), w, padding=1))
    torch_loss = F.cross_entropy(torch.flatten(hidden, 1) @ f.T, torch.from_numpy(labels))
    torch_loss.backward()
    assert float(loss) == pytest.approx(torch_loss.item(), rel=1e-5)
    np.testing.assert_allclose(state.parameters["W"].grad, w.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(state.parameters["F"].grad, f.grad.numpy(), rtol=1e-4, atol=1e-4)
