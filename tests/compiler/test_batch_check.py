"""Static-batch exports: compiled to a program that runs at any batch (proven at transform time against
the source model run at its own batch), or refused in one line; never emitted broken."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import llcompile
from llcompile.compiler.verify import run_model, run_stage_chain, static_batch
from llcompile.errors import LLCompileError
from llcompile.frontend.canonical.dynamic_batch import _segments
from tests.backends.chain import losses_on_both_backends
from tests.cli.test_commands import assert_user_error, run

EXPORT_BATCH = 2


class _AttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _TorchvisionStyleViT(nn.Module):
    """torchvision's VisionTransformer in small: patch conv, class token expanded to the batch,
    nn.MultiheadAttention (its export reshapes [T, B, ...] <-> [T * B, ...] and [B * heads, ...])."""

    def __init__(self, width: int = 24, heads: int = 3, classes: int = 10):
        super().__init__()
        self.patches = nn.Conv2d(3, width, 4, 4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, 17, width) * 0.02)
        self.blocks = nn.Sequential(_AttentionBlock(width, heads), _AttentionBlock(width, heads))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, classes)

    def forward(self, x):
        n = x.shape[0]
        x = self.patches(x).reshape(n, self.patches.out_channels, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.position
        return self.head(self.norm(self.blocks(x))[:, 0])


@pytest.fixture(scope="module")
def static_vit(tmp_path_factory):
    """The ViT exported by torch's default (dynamo) exporter with an example batch of 2 and no
    dynamic_shapes: its input is [2, 3, 16, 16] and the batch is baked into its Reshape targets."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("static") / "vit.onnx"
    torch.onnx.export(_TorchvisionStyleViT().eval(), (torch.randn(EXPORT_BATCH, 3, 16, 16),), path, dynamo=True,
                      input_names=["input"], output_names=["logits"], verbose=False)
    return path


def test_a_static_batch_vit_export_runs_at_any_batch_size(static_vit):
    source = onnx.load(static_vit)
    assert static_batch(source) == EXPORT_BATCH
    program = llcompile.transform(static_vit, "dbl", blocks=2)
    x = np.random.default_rng(1).standard_normal((6, 3, 16, 16)).astype(np.float32)
    reference = np.concatenate([run_model(source, x[i:i + EXPORT_BATCH]) for i in range(0, 6, EXPORT_BATCH)])
    for size in (5, 6):
        chain, _ = run_stage_chain(program, x[:size], training_form=False)
        np.testing.assert_allclose(chain, reference[:size], rtol=1e-4, atol=1e-5)
    # and it trains at a batch of its own, the same on both backends
    labels = np.arange(7) % 10
    losses = losses_on_both_backends(program, np.random.default_rng(2).standard_normal(
        (7, 3, 16, 16)).astype(np.float32), labels)
    np.testing.assert_allclose(losses["torch"], losses["ort"], rtol=1e-4)


def _batch_bias_model(batch: int = EXPORT_BATCH) -> onnx.ModelProto:
    """x [batch, 4] + a constant [batch, 4] (a different bias per sample of the exported batch) -> Gemm:
    the constant carries the batch in a way no rewrite can undo."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Add", ["x", "bias"], ["h"], name="per_sample_bias"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w", "b"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(rng.standard_normal((batch, 4)).astype(np.float32), "bias"),
             numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b")]
    graph = helper.make_graph(nodes, "baked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_constant_that_carries_the_batch_is_refused_with_how_to_re_export(tmp_path):
    path = tmp_path / "baked.onnx"
    onnx.save(_batch_bias_model(), path)
    with pytest.raises(LLCompileError) as caught:
        llcompile.transform(path, "bp")
    message = str(caught.value)
    assert "\n" not in message
    assert f"exported with a static batch of {EXPORT_BATCH}" in message and "at batch 3" in message
    assert "'per_sample_bias'" in message and "dynamic_shapes" in message


def test_the_cli_refuses_it_in_one_line_and_writes_nothing(tmp_path):
    onnx.save(_batch_bias_model(), tmp_path / "baked.onnx")
    result = run("transform", tmp_path / "baked.onnx", "-o", tmp_path / "out", "--strategy", "bp")
    assert_user_error(result, "static batch of 2", "re-export")
    assert not (tmp_path / "out").exists()


def test_a_dynamic_batch_model_needs_no_proof():
    model = _batch_bias_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert static_batch(model) is None


@pytest.mark.parametrize("exported, target, expected", [
    ([65, 2, 144], [65, 2, 3, 48], [([0], [0]), ([1], [1]), ([2], [2, 3])]),  # split heads
    ([65, 2, 3, 16], [130, 48], [([0, 1], [0]), ([2, 3], [1])]),  # merge sequence and batch
    ([65, 2, 48], [65, 6, 16], [([0], [0]), ([1, 2], [1, 2])]),  # batch x heads from batch x width
    ([2, 8, 1], [2, 8], [([0], [0]), ([1, 2], [1])]),  # a trailing size-1 axis joins the last run
    ([2, 8], [2, 8, 1], [([0], [0]), ([1], [1]), ([], [2])]),
    ([2, 8], [3, 5], None),
    ([2, "s"], [2, 8], None),
])
def test_reshape_targets_line_up_with_the_input_in_runs(exported, target, expected):
    assert _segments(exported, target) == expected
