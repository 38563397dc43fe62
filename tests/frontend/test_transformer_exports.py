"""Transformer graphs llcompile did not write: torch's own ``nn.TransformerEncoder`` (batch_first, post- and
pre-norm) and a torchvision-style ViT (``nn.MultiheadAttention`` encoder blocks, class token, learned
positions; built from torch.nn, torchvision is not a dependency), exported by ``torch.onnx.export``
as users call it: with its default (dynamo, torch.export-based) exporter, and with the TorchScript-based
one (``dynamo=False``). Each compiles with every strategy; the stage chain computes the model
(onnxruntime on the export), and a few dbl steps train on both backends alike."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.frontend.graph_builder import value_named
from llcompile.train import TrainConfig, train
from llcompile.compiler.verify import relative_error, run_model, run_stage_chain
from tests.reference import softmax_cross_entropy

DIM, CLASSES, SHAPE = 32, 10, (3, 16, 16)
STRATEGIES = [("bp", {}), ("dbl", {"blocks": 3}), ("dbl", {"blocks": 2, "aux_head": "augmented"}),
              ("local-sgd", {"prefix": 2}), ("dbl-hebbian", {"prefix": 1, "blocks": 2})]


class EncoderClassifier(nn.Module):
    """4x4 patches -> nn.TransformerEncoder (2 layers) -> mean over tokens -> Linear."""

    def __init__(self, norm_first: bool):
        super().__init__()
        self.embed = nn.Conv2d(SHAPE[0], DIM, 4, stride=4)
        layer = nn.TransformerEncoderLayer(DIM, 4, 2 * DIM, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x).flatten(2).transpose(1, 2)).mean(dim=1))


class TorchvisionStyleViT(nn.Module):
    """torchvision.models.vision_transformer's structure: conv_proj, class token, pos embedding, pre-norm
    EncoderBlocks (LayerNorm, nn.MultiheadAttention, LayerNorm, MLP with GELU), final LayerNorm, head on token 0."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(DIM, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(DIM, 2, batch_first=True)
            self.ln_2 = nn.LayerNorm(DIM, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

        def forward(self, x):
            y = self.ln_1(x)
            x = x + self.self_attention(y, y, y, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(SHAPE[0], DIM, 4, stride=4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embedding = nn.Parameter(torch.randn(1, 17, DIM) * 0.02)
        self.layers = nn.Sequential(self.Block(), self.Block())
        self.ln = nn.LayerNorm(DIM, eps=1e-6)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        x = self.conv_proj(x).reshape(x.shape[0], DIM, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.layers(x))[:, 0])


MODELS = {"encoder-post-norm": lambda: EncoderClassifier(False), "encoder-pre-norm": lambda: EncoderClassifier(True),
          "torchvision-vit": TorchvisionStyleViT}


EXPORTERS = ("dynamo", "torchscript")


def export_as_users_do(name: str, exporter: str, path) -> None:
    """``torch.onnx.export`` with a dynamic batch: the default exporter is given ``dynamic_shapes`` (it
    asks for them instead of ``dynamic_axes``) and an eval-mode module (it warns on a training one)."""
    torch.manual_seed(0)
    module = MODELS[name]()
    example = torch.randn(2, *SHAPE)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    if exporter == "dynamo":
        torch.onnx.export(module.eval(), (example,), str(path), dynamic_shapes=({0: torch.export.Dim("batch")},),
                          **names)
    else:
        torch.onnx.export(module.train(), (example,), str(path), dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **names)


def export_params(slow_training: bool = False):
    """(model, exporter) pairs; with ``slow_training`` the encoders' dynamo exports are marked slow: their
    TorchScript twins and the dynamo ViT train in the default run, each pair takes 5 to 15 s."""
    slow = {(name, "dynamo") for name in MODELS if name.startswith("encoder")} if slow_training else set()
    return [pytest.param((name, exporter), id=f"{name}-{exporter}", marks=[pytest.mark.slow] * ((name, exporter) in slow))
            for exporter in EXPORTERS for name in MODELS]


@pytest.fixture
def exported(request, build_once):
    name, exporter = request.param
    return build_once(f"transformer_export_{name}_{exporter}.onnx", lambda path: export_as_users_do(name, exporter, path))


@pytest.mark.parametrize("exported", export_params(), indirect=True)
def test_cut_points_are_the_residual_stream(exported):
    model = llcompile.load(exported)
    cuts = llcompile.analyze(model).cut_points
    shapes = [list(value_named(model.graph, c).shape)[1:] for c in cuts]
    tokens = 16 + ("vit" in exported.name)
    # the embedding (post-norm: before its transpose to tokens), the stream after each attention and
    # each MLP but the last, the head's input
    assert shapes[0] in ([tokens, DIM], [DIM, tokens]) and shapes[1:] == [[tokens, DIM]] * 3 + [[DIM]]


@pytest.mark.parametrize("exported", export_params(), indirect=True)
def test_every_strategy_computes_the_model(exported):
    source = onnx.load(exported)
    x = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    labels = np.array([1, 7], dtype=np.int64)
    reference = run_model(source, x)
    model = llcompile.load(exported)
    for strategy, options in STRATEGIES:
        program = llcompile.transform(model, strategy, **options)
        for stage in program.stages:
            onnx.checker.check_model(stage.model, full_check=True)
        chain, losses = run_stage_chain(program, x, labels, training_form=True)
        assert relative_error(chain, reference) < 1e-4, (strategy, options)
        assert losses[program.stages[-1].name] == pytest.approx(softmax_cross_entropy(chain, labels), rel=1e-4)


@pytest.mark.parametrize("exported", export_params(slow_training=True), indirect=True)
def test_dbl_trains_on_both_backends_alike(exported, tmp_path):
    program = llcompile.transform(exported, "dbl", blocks=2).save(tmp_path / "dbl")
    losses = {}
    for backend in ("torch", "ort"):
        config = TrainConfig(data="synthetic:256", epochs=3, batch_size=64, lr=2e-3, seed=0, backend=backend,
                             optimizer=OptimizerConfig(name="adamw"))
        result = train(program, config, tmp_path / f"run-{backend}", show_progress=False)
        losses[backend] = [record["train_loss"] for record in result.history]
    assert losses["torch"][-1] < losses["torch"][0]
    assert losses["ort"] == pytest.approx(losses["torch"], rel=1e-3)


def test_a_static_batch_default_export_is_refused_in_one_line(build_once):
    """``torch.onnx.export(module, (x,), path)`` at batch 1, nothing else: nn.MultiheadAttention's dynamo graph
    bakes the batch of 1 into Reshapes where a unit dim cannot be told from it; the program is proven
    at batch 2 at transform time, fails there, and is refused (a batch-2 export compiles:
    tests/compiler/test_batch_check.py)."""
    def export_static(path):
        torch.manual_seed(0)
        torch.onnx.export(EncoderClassifier(False).eval(), (torch.randn(1, *SHAPE),), str(path))

    path = build_once("transformer_export_encoder_static_batch.onnx", export_static)
    with pytest.raises(llcompile.LLCompileError, match=r"exported with a static batch of 1, .* at batch 2 \(.*"
                                                       r"Reshape node '\w+'.*re-export it with a dynamic batch"):
        llcompile.transform(path, "dbl", blocks=2)
