"""Each transformer op in a small hand-built classifier, trained by backprop on both backends.

The graph is ``x [N,4,6] -> MatMul(w) -> h -> OP... -> y -> Flatten -> Gemm -> logits``; each case
gives the ONNX nodes from ``h`` to ``y`` and the same computation written in torch. Forward: each
backend's stage output against onnxruntime on the graph; gradients of ``w``, of the head and of
the op's own initializers: each backend against torch autograd on the torch version.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.backend import OrtBackend
from llcompile.backends.torch.backend import TorchBackend
from llcompile.compiler.verify import relative_error, run_model

BATCH, TOKENS, DIM, CLASSES = 3, 4, 6, 5
NO_DECAY = OptimizerConfig(name="sgd", momentum=0.0, nesterov=False, weight_decay=0.0)


@dataclass
class Case:
    nodes: list  # ONNX nodes reading "h", writing "y"
    torch_fn: Callable  # (h, params) -> y
    params: dict = field(default_factory=dict)  # the op's learned initializers
    constants: dict = field(default_factory=dict)  # its other initializers
    opset: int = 18


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output] if isinstance(output, str) else output, **attrs)


def ints(*values):
    return np.array(values, np.int64)


RNG = np.random.default_rng(1)
GAMMA = (RNG.random(DIM) + 0.5).astype(np.float32)
BETA = RNG.standard_normal(DIM).astype(np.float32)
POS = RNG.standard_normal((1, TOKENS, DIM)).astype(np.float32)
TOKEN = RNG.standard_normal((1, 1, DIM)).astype(np.float32)
MASK = np.tril(np.ones((TOKENS, TOKENS), bool))  # causal


def attention_nodes(softmax: str = "Softmax", masked: bool = False) -> list:
    """h attends to itself with 2 heads: reshape to [N,T,2,3] (batch copied from h's shape), heads first,
    scores Q·Kᵀ / sqrt(3), (mask,) softmax over the keys, times V, heads back."""
    scores = [node("MatMul", ["q", "kt"], "scores_raw"), node("Div", ["scores_raw", "sqrt_d"], "scores")]
    if masked:
        scores.append(node("Where", ["mask", "scores", "minus_big"], "scores_masked"))
    last_scores = "scores_masked" if masked else "scores"
    return [
        node("Shape", ["h"], "h_shape"), node("Gather", ["h_shape", "zero"], "n", axis=0),
        node("Unsqueeze", ["n", "zero_axes"], "n1"),
        node("Concat", ["n1", "heads_shape"], "split_shape", axis=0),
        node("Reshape", ["h", "split_shape"], "h4"),
        node("Transpose", ["h4"], "q", perm=[0, 2, 1, 3]),
        node("Transpose", ["h4"], "kt", perm=[0, 2, 3, 1]),
        *scores,
        node(softmax, [last_scores], "probs", axis=-1),
        node("MatMul", ["probs", "q"], "context"),
        node("Transpose", ["context"], "context_t", perm=[0, 2, 1, 3]),
        node("Concat", ["n1", "merged_shape"], "merge_shape", axis=0),
        node("Reshape", ["context_t", "merge_shape"], "y"),
    ]


ATTENTION_CONSTANTS = {"zero": np.array(0, np.int64), "zero_axes": ints(0), "heads_shape": ints(TOKENS, 2, 3),
                       "merged_shape": ints(TOKENS, DIM), "sqrt_d": np.array(math.sqrt(3), np.float32),
                       "mask": MASK, "minus_big": np.array(-1e9, np.float32)}


def torch_attention(h, softmax=torch.softmax, masked=False):
    q = h.reshape(h.shape[0], TOKENS, 2, 3).transpose(1, 2)
    scores = q @ q.transpose(-2, -1) / math.sqrt(3)
    if masked:
        scores = torch.where(torch.from_numpy(MASK), scores, torch.tensor(-1e9))
    return (softmax(scores, -1) @ q).transpose(1, 2).reshape(h.shape[0], TOKENS, DIM)


CASES = {
    "gelu": Case([node("Gelu", ["h"], "y")], lambda h, p: F.gelu(h), opset=20),
    "gelu-tanh": Case([node("Gelu", ["h"], "y", approximate="tanh")],
                      lambda h, p: F.gelu(h, approximate="tanh"), opset=20),
    "gelu-erf-form": Case(
        [node("Div", ["h", "sqrt2"], "hs"), node("Erf", ["hs"], "e"), node("Add", ["e", "one"], "e1"),
         node("Mul", ["h", "e1"], "he"), node("Mul", ["he", "half"], "y")], lambda h, p: F.gelu(h),
        constants={"sqrt2": np.array(math.sqrt(2), np.float32), "one": np.array(1, np.float32),
                   "half": np.array(0.5, np.float32)}),
    "layernorm": Case([node("LayerNormalization", ["h", "gamma", "beta"], "y", axis=-1, epsilon=1e-5)],
                      lambda h, p: F.layer_norm(h, [DIM], p["gamma"], p["beta"]),
                      params={"gamma": GAMMA, "beta": BETA}, opset=17),
    "layernorm-shared-scale": Case(  # the scale is read twice: no module owns it
        [node("LayerNormalization", ["h", "gamma", "beta"], "n", axis=-1), node("Mul", ["n", "gamma"], "y")],
        lambda h, p: F.layer_norm(h, [DIM], p["gamma"], p["beta"]) * p["gamma"],
        params={"gamma": GAMMA, "beta": BETA}, opset=17),
    "layernorm-two-axes": Case(  # normalizes [T, D], scale and bias [T, D]
        [node("LayerNormalization", ["h", "pos", "pos_shift"], "y", axis=1, epsilon=1e-3)],
        lambda h, p: F.layer_norm(h, [TOKENS, DIM], p["pos"], p["pos_shift"], eps=1e-3),
        params={"pos": POS[0], "pos_shift": POS[0][::-1].copy()}, opset=17),
    "layernorm-decomposed": Case(
        [node("ReduceMean", ["h", "last"], "mean"), node("Sub", ["h", "mean"], "centred"),
         node("Pow", ["centred", "two"], "sq"), node("ReduceMean", ["sq", "last"], "var"),
         node("Add", ["var", "eps"], "var_eps"), node("Sqrt", ["var_eps"], "std"),
         node("Div", ["centred", "std"], "normed"), node("Mul", ["normed", "gamma"], "scaled"),
         node("Add", ["scaled", "beta"], "y")],
        lambda h, p: F.layer_norm(h, [DIM], p["gamma"], p["beta"]),
        params={"gamma": GAMMA, "beta": BETA},
        constants={"last": ints(-1), "two": np.array(2, np.float32), "eps": np.array(1e-5, np.float32)}),
    "silu": Case([node("Sigmoid", ["h"], "s"), node("Mul", ["h", "s"], "y")], lambda h, p: F.silu(h)),
    "global-max-pool": Case([node("ReduceMax", ["h", "tokens_axis"], "y", keepdims=1)],
                            lambda h, p: h.amax(1, keepdim=True), constants={"tokens_axis": ints(1)}),
    "reduce-min": Case([node("ReduceMin", ["h", "tokens_axis"], "y", keepdims=0)],
                       lambda h, p: h.amin(1), constants={"tokens_axis": ints(1)}),
    "attention": Case(attention_nodes(), lambda h, p: torch_attention(h), constants=ATTENTION_CONSTANTS),
    "attention-masked": Case(attention_nodes(masked=True), lambda h, p: torch_attention(h, masked=True),
                             constants=ATTENTION_CONSTANTS),
    "attention-logsoftmax": Case(attention_nodes("LogSoftmax"),
                                 lambda h, p: torch_attention(h, torch.log_softmax), constants=ATTENTION_CONSTANTS),
    "split-concat": Case([node("Split", ["h", "sizes"], ["a", "b"], axis=2), node("Mul", ["b", "b"], "b2"),
                          node("Concat", ["b2", "a"], "y", axis=2)],
                         lambda h, p: torch.cat([h[..., 2:] ** 2, h[..., :2]], 2), constants={"sizes": ints(2, 4)}),
    "split-equal": Case([node("Split", ["h"], ["a", "b"], axis=2, num_outputs=2), node("Mul", ["a", "b"], "y")],
                        lambda h, p: h[..., :3] * h[..., 3:]),
    "slice": Case([node("Slice", ["h", "starts", "ends", "slice_axes"], "y")], lambda h, p: h[:, 1:3],
                  constants={"starts": ints(1), "ends": ints(3), "slice_axes": ints(1)}),
    "class-token": Case([node("Gather", ["h", "zero"], "y", axis=1)], lambda h, p: h[:, 0],
                        constants={"zero": np.array(0, np.int64)}),
    "learned-token": Case(
        [node("Shape", ["h"], "h_shape"), node("Slice", ["h_shape", "starts0", "ends1"], "n1"),
         node("Concat", ["n1", "ones2"], "token_shape", axis=0), node("Expand", ["token", "token_shape"], "tokens"),
         node("Concat", ["tokens", "h"], "y", axis=1)],
        lambda h, p: torch.cat([p["token"].expand(h.shape[0], -1, -1), h], 1), params={"token": TOKEN},
        constants={"starts0": ints(0), "ends1": ints(1), "ones2": ints(1, 1)}),
    "positional-embedding-layer-scale": Case(
        [node("Add", ["h", "pos"], "hp"), node("Mul", ["hp", "gamma"], "hg"), node("Sub", ["hg", "beta"], "y")],
        lambda h, p: (h + p["pos"]) * p["gamma"] - p["beta"], params={"pos": POS, "gamma": GAMMA, "beta": BETA}),
    "erf-sqrt-pow": Case(
        [node("Pow", ["h", "two"], "sq"), node("Add", ["sq", "one"], "sq1"), node("Sqrt", ["sq1"], "r"),
         node("Erf", ["h"], "e"), node("Mul", ["r", "e"], "y")],
        lambda h, p: torch.sqrt(h ** 2 + 1) * torch.erf(h),
        constants={"two": np.array(2, np.float32), "one": np.array(1, np.float32)}),
}


def classifier(case: Case) -> tuple[onnx.ModelProto, dict[str, np.ndarray], int]:
    """The case's graph with its input layer and head; its learned initializers; the head's width."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((DIM, DIM)) / math.sqrt(DIM)).astype(np.float32)
    h = torch.from_numpy(np.ones((1, TOKENS, DIM), np.float32))
    features = case.torch_fn(h, {k: torch.from_numpy(v) for k, v in case.params.items()}).numel()
    head_w = (rng.standard_normal((CLASSES, features)) / math.sqrt(features)).astype(np.float32)
    head_b = rng.standard_normal(CLASSES).astype(np.float32)
    learned = {"w": w, "head.w": head_w, "head.b": head_b, **case.params}
    nodes = [node("MatMul", ["x", "w"], "h"), *case.nodes, node("Flatten", ["y"], "flat", axis=1),
             node("Gemm", ["flat", "head.w", "head.b"], "logits", transB=1)]
    initializers = [numpy_helper.from_array(v, k) for k, v in {**learned, **case.constants}.items()]
    graph = helper.make_graph(nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", TOKENS, DIM])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    return model, learned, features


def torch_gradients(case: Case, learned: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray):
    params = {k: torch.tensor(v, requires_grad=True) for k, v in learned.items()}
    h = torch.from_numpy(x) @ params["w"]
    y = case.torch_fn(h, params).flatten(1)
    loss = F.cross_entropy(y @ params["head.w"].T + params["head.b"], torch.from_numpy(labels))
    loss.backward()
    return {k: p.grad.numpy() for k, p in params.items()}


@pytest.fixture(scope="module")
def ort_backend(tmp_path_factory):
    return OrtBackend(cache_dir=tmp_path_factory.mktemp("ort-artifacts"))


def batch():
    rng = np.random.default_rng(2)
    return (rng.standard_normal((BATCH, TOKENS, DIM)).astype(np.float32),
            rng.integers(0, CLASSES, BATCH).astype(np.int64))


@pytest.mark.parametrize("name", CASES)
def test_forward_and_gradients_on_both_backends(save_model, ort_backend, name):
    case = CASES[name]
    model, learned, _ = classifier(case)
    path = save_model(model)
    program = llcompile.transform(path, strategy="bp")
    (stage,) = program.stages
    assert sorted(stage.params) == sorted(learned)  # the op's own initializers are trained
    x, labels = batch()
    expected_logits = run_model(model, x)
    expected_grads = torch_gradients(case, learned, x, labels)
    torch_backend = TorchBackend(device="cpu", mode="eager")
    for backend in (ort_backend, torch_backend):
        (trainable,) = backend.build(program, NO_DECAY)
        bx, blabels = backend.to_batch(x, labels)
        assert relative_error(backend.to_numpy(trainable.forward(bx)), expected_logits) < 1e-5, backend.name
        trainable.train_step(bx, blabels, lr=0.0)
        grads = (trainable.gradients() if backend is ort_backend else
                 {k: p.grad.numpy() for k, p in trainable.module.onnx_parameters().items()})
        for param, expected in expected_grads.items():
            assert np.any(expected), param
            np.testing.assert_allclose(grads[param], expected, rtol=1e-4, atol=1e-6,
                                       err_msg=f"{backend.name} {param}")
