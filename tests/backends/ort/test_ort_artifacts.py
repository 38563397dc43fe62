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

from llcompile.backends.ort.artifacts import CHECKPOINT, EVAL_MODEL, TRAINING_MODEL, stage_artifacts

CHANNELS, CLASSES, BATCH = 4, 5, 6

# name -> (ONNX op and attributes, the same op in torch, input size, output size)
CASES = {
    "hardsigmoid": ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, F.hardsigmoid, 6, 6),
    "hardswish": ("HardSwish", {}, F.hardswish, 6, 6),
    "elu": ("Elu", {}, F.elu, 6, 6),
    "elu-alpha": ("Elu", {"alpha": 0.3}, lambda x: F.elu(x, 0.3), 6, 6),
    "softplus": ("Softplus", {}, F.softplus, 6, 6),
    # F.local_response_norm centres an even window elsewhere than ONNX: odd sizes only
    "lrn-alexnet": ("LRN", {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},
                    lambda x: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0), 6, 6),
    "lrn-3": ("LRN", {"size": 3, "alpha": 0.1, "beta": 0.6, "bias": 2.0},
              lambda x: F.local_response_norm(x, 3, 0.1, 0.6, 2.0), 6, 6),
    "avgpool-2x2": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]},
                    lambda x: F.avg_pool2d(x, 2, 2), 6, 3),
    "avgpool-ceil-exclude-pad": ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
                                 lambda x: F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False), 7, 4),
    "avgpool-3x3-pad-exclude": ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                                lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), 7, 4),
    "avgpool-3x3-pad-include": ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1],
                                                "count_include_pad": 1},
                                lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=True), 5, 5),
    # given its mask output; ratio 0 so that both sides drop nothing (their random masks differ)
    "dropout": ("Dropout", {"ratio": np.array(0.0, np.float32), "training_mode": np.array(True)},
                lambda x: F.dropout(x, 0.0, training=True), 6, 6),
}


def _graph(op: str, attrs: dict, size: int, out: int, weight: np.ndarray, fc: np.ndarray) -> onnx.ModelProto:
    """The stage graph; a numpy array among ``attrs`` is an initializer of that name, the op's next input."""
    constants = {k: v for k, v in attrs.items() if isinstance(v, np.ndarray)}
    attrs = {k: v for k, v in attrs.items() if k not in constants}
    nodes = [helper.make_node("Conv", ["input", "W"], ["h"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["h", *constants], ["a"], name="op", **attrs),
             helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "F"], ["logits"], name="fc", transB=1),
             helper.make_node("SoftmaxCrossEntropyLoss", ["logits", "labels"], ["loss"], name="loss")]
    graph = helper.make_graph(
        nodes, "stage", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", CHANNELS, size, size]),
                         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(fc, "F"),
         *(numpy_helper.from_array(v, k) for k, v in constants.items())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _stage_inputs(size: int, out: int) -> tuple[np.ndarray, ...]:
    """Conv weight, Gemm weight, a batch whose first sample is zeros (so the op also sees exact
    zeros, the kink of PRelu and Elu), labels."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((CLASSES, CHANNELS * out * out)).astype(np.float32) * 0.3
    x = (3 * rng.standard_normal((BATCH, CHANNELS, size, size))).astype(np.float32)
    x[0] = 0
    return weight, fc, x, rng.integers(0, CLASSES, BATCH)


def _torch_loss(hidden: torch.Tensor, f: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    loss = F.cross_entropy(torch.flatten(hidden, 1) @ f.T, torch.from_numpy(labels))
    loss.backward()
    return loss


@pytest.mark.parametrize("scale", [1, 100], ids=["moderate", "large"])
@pytest.mark.parametrize("case", list(CASES))
def test_decomposed_op_gradients_match_torch_autograd(case, scale, tmp_path):
    """``large``: the op's inputs reach |x| ~ 1e3, where exp(|x|) overflows float32."""
    op, attrs, torch_op, size, out = CASES[case]
    weight, fc, x, labels = _stage_inputs(size, out)
    x *= scale

    directory = stage_artifacts(_graph(op, attrs, size, out, weight, fc), ["W", "F"], [], tmp_path)
    state = CheckpointState.load_checkpoint(str(directory / CHECKPOINT))
    module = Module(directory / TRAINING_MODEL, state, directory / EVAL_MODEL)
    module.train()
    loss = module(x, labels)

    w, f = torch.tensor(weight, requires_grad=True), torch.tensor(fc, requires_grad=True)
    torch_loss = _torch_loss(torch_op(F.conv2d(torch.from_numpy(x), w, padding=1)), f, labels)
    assert float(loss) == pytest.approx(torch_loss.item(), rel=1e-5)
    assert np.all(np.isfinite(state.parameters["W"].grad))
    np.testing.assert_allclose(state.parameters["W"].grad, w.grad.numpy(), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(state.parameters["F"].grad, f.grad.numpy(), rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("channels", [CHANNELS, 1], ids=["per-channel", "single"])
def test_prelu_slope_stays_trainable_with_torch_autograds_gradient(channels, tmp_path):
    """nn.PReLU's slope, exported as [C, 1, 1] (one per channel) or [1]."""
    weight, fc, x, labels = _stage_inputs(6, 6)
    slope = np.linspace(-0.5, 0.5, channels, dtype=np.float32)
    onnx_slope = slope.reshape(channels, 1, 1) if channels > 1 else slope
    directory = stage_artifacts(_graph("PRelu", {"S": onnx_slope}, 6, 6, weight, fc), ["W", "F", "S"], [], tmp_path)
    state = CheckpointState.load_checkpoint(str(directory / CHECKPOINT))
    module = Module(directory / TRAINING_MODEL, state, directory / EVAL_MODEL)
    module.train()
    loss = module(x, labels)

    w, f = torch.tensor(weight, requires_grad=True), torch.tensor(fc, requires_grad=True)
    prelu = torch.nn.PReLU(channels)
    prelu.weight.data = torch.from_numpy(slope)
    torch_loss = _torch_loss(prelu(F.conv2d(torch.from_numpy(x), w, padding=1)), f, labels)
    assert float(loss) == pytest.approx(torch_loss.item(), rel=1e-5)
    np.testing.assert_allclose(state.parameters["S"].grad.reshape(-1), prelu.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.parameters["W"].grad, w.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(state.parameters["F"].grad, f.grad.numpy(), rtol=1e-4, atol=1e-4)
