"""AuxHeadsPass: head structure, initialisation, the plan it records, and the numbers it computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from llcompile.analysis.structure import analyze
from llcompile.compiler.transform import transform
from llcompile.cli.inspection import describe_program, render_text
from llcompile.models import export
from llcompile.analysis.readout import is_token_tensor
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import load
from llcompile.frontend.graph_builder import value_named
from llcompile.frontend.importer import canonicalize
from llcompile.passes.aux_heads import AuxHeadsPass
from llcompile.passes.model_loss import ModelLossPass
from llcompile.passes.partition import PartitionPass
from llcompile.program.plan import Plan
from llcompile.util.ort_session import session as ort_session
from tests.fixtures import legacy_models as lm
from tests.fixtures.token_models import INPUT_SHAPE, export_tiny

# small_cnn: input [N,3,16,16]; cut points /pool/MaxPool_output_0 [N,8,8,8] and
# /fc/Flatten_output_0 [N,8]; 10 classes.
CUT_4D = "/pool/MaxPool_output_0"
CUT_2D = "/fc/Flatten_output_0"
HEAD1, HEAD2 = f"aux@{CUT_4D}", f"aux@{CUT_2D}"  # heads are named after the cut they read
CHANNELS = 8
CLASSES = 10
from tests.reference import softmax_cross_entropy


def _annotated(kind: str = "fc", seed: int = 0, cuts=(CUT_4D, CUT_2D)) -> ir.Model:
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=list(cuts))(model)
    result = AuxHeadsPass(kind=kind, seed=seed)(model)
    assert result.modified is True and result.model is model
    return model


def _head_nodes(model: ir.Model, stage: str) -> list[ir.Node]:
    head = next(f"aux@{s.output}" for s in Plan.read(model).stages if s.name == stage)
    return [n for n in model.graph if n.name.startswith(f"{head}.") or n.name == f"{stage}.aux_loss"]


def _attrs(node: ir.Node) -> dict:
    return {k: v.value for k, v in node.attributes.items()}


def _init(model: ir.Model, name: str) -> np.ndarray:
    return model.graph.initializers[name].const_value.numpy()


def _run(model: ir.Model, extra_outputs: list[str], x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Run `model` with `extra_outputs` (intermediate values) exposed as graph outputs."""
    model = ir.from_proto(ir.to_proto(model))  # a copy
    produced = {v.name: v for n in model.graph for v in n.outputs}
    for name in extra_outputs:
        model.graph.outputs.append(produced[name])
    proto = ir.to_proto(model)
    session = ort_session(proto)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": x, "labels": labels})))


def _batch(n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3, 16, 16)).astype(np.float32),
            rng.integers(0, CLASSES, n).astype(np.int64))


# ---------------------------------------------------------------- structure


def test_fc_head_on_4d_cut_is_gap_flatten_gemm():
    model = _annotated("fc")
    nodes = _head_nodes(model, "block1")
    assert [n.op_type for n in nodes] == ["GlobalAveragePool", "Flatten", "Gemm", "SoftmaxCrossEntropyLoss"]
    gap, flatten, gemm, loss = nodes
    assert gap.inputs[0].name == CUT_4D
    assert flatten.inputs[0] is gap.outputs[0] and _attrs(flatten)["axis"] == 1
    assert gemm.inputs[0] is flatten.outputs[0] and _attrs(gemm)["transB"] == 1
    assert gemm.inputs[1].const_value.shape == (CLASSES, CHANNELS)
    assert gemm.inputs[2].const_value.shape == (CLASSES,)
    assert loss.inputs[0] is gemm.outputs[0] and loss.inputs[1].name == "labels"
    assert _attrs(loss)["reduction"] == "mean"


def test_fc_head_on_2d_cut_is_a_single_gemm():
    model = _annotated("fc")
    nodes = _head_nodes(model, "block2")
    assert [n.op_type for n in nodes] == ["Gemm", "SoftmaxCrossEntropyLoss"]
    gemm = nodes[0]
    assert gemm.inputs[0].name == CUT_2D and _attrs(gemm)["transB"] == 1
    assert gemm.inputs[1].const_value.shape == (CLASSES, CHANNELS)


def test_conv_head_on_4d_cut():
    model = _annotated("conv")
    nodes = _head_nodes(model, "block1")
    assert [n.op_type for n in nodes] == ["Conv", "BatchNormalization", "Relu", "GlobalAveragePool", "Flatten",
                                          "Gemm", "Relu", "Gemm", "SoftmaxCrossEntropyLoss"]
    conv, bn = nodes[0], nodes[1]
    assert conv.inputs[0].name == CUT_4D
    assert conv.inputs[1].const_value.shape == (CHANNELS, CHANNELS, 1, 1)
    assert tuple(_attrs(conv)["kernel_shape"]) == (1, 1)
    assert _attrs(bn)["training_mode"] == 1 and len(bn.outputs) == 3
    assert all(v.const_value is not None for v in bn.inputs[1:5])
    gemms = [n for n in nodes if n.op_type == "Gemm"]
    assert [g.inputs[1].const_value.shape for g in gemms] == [(CHANNELS, CHANNELS), (CLASSES, CHANNELS)]


def test_dgl_head_on_4d_cut_is_a_strided_3x3_conv_then_a_128_unit_mlp():
    model = _annotated("dgl")
    nodes = _head_nodes(model, "block1")
    assert [n.op_type for n in nodes] == ["Conv", "BatchNormalization", "Relu", "GlobalAveragePool", "Flatten",
                                          "Gemm", "Relu", "Gemm", "SoftmaxCrossEntropyLoss"]
    conv = nodes[0]
    assert conv.inputs[1].const_value.shape == (CHANNELS, CHANNELS, 3, 3)
    assert {k: tuple(v) for k, v in _attrs(conv).items()} == {
        "kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}
    gemms = [n for n in nodes if n.op_type == "Gemm"]
    assert [g.inputs[1].const_value.shape for g in gemms] == [(128, CHANNELS), (CLASSES, 128)]
    assert [n.op_type for n in _head_nodes(model, "block2")] == ["Gemm", "Relu", "Gemm", "SoftmaxCrossEntropyLoss"]


def test_dgl_head_width_scales_its_conv_not_its_mlp():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    AuxHeadsPass(kind="dgl", width=0.5)(model)
    assert _init(model, f"{HEAD1}.conv.weight").shape == (CHANNELS // 2, CHANNELS, 3, 3)
    assert _init(model, f"{HEAD1}.fc1.weight").shape == (128, CHANNELS // 2)
    x, labels = _batch()
    out = _run(model, [CUT_4D, f"{HEAD1}.logits"], x, labels)
    np.testing.assert_allclose(out[f"{HEAD1}.logits"], _numpy_head_logits("dgl", model, HEAD1, out[CUT_4D]),
                               rtol=1e-4, atol=1e-5)


def test_conv_head_on_2d_cut_is_an_mlp():
    model = _annotated("conv")
    assert [n.op_type for n in _head_nodes(model, "block2")] == ["Gemm", "Relu", "Gemm", "SoftmaxCrossEntropyLoss"]


@pytest.mark.parametrize("kind", ["fc", "conv", "dgl"])
def test_plan_records_losses_and_heads(kind):
    model = _annotated(kind)
    plan = Plan.read(model)
    assert plan.options["aux_head"] == kind
    graph_outputs = [v.name for v in model.graph.outputs]
    assert graph_outputs == ["logits", "block1.aux_loss", "block2.aux_loss"]
    owners: dict[str, str] = {}
    for stage in plan.stages[:-1]:
        assert stage.loss == f"{stage.name}.aux_loss"
        assert stage.head.kind == kind
        loss_node = model.graph.outputs[graph_outputs.index(stage.loss)].producer()
        assert loss_node.op_type == "SoftmaxCrossEntropyLoss"
        assert loss_node.inputs[0].name == stage.head.logits
        assert stage.head.params == sorted(stage.head.params)
        assert all(name.endswith(("running_mean", "running_var")) for name in stage.head.buffers)
        assert len(stage.head.buffers) == (2 if kind != "fc" and stage.name == "block1" else 0)  # BN on 4-D only
        for name in stage.head.params + stage.head.buffers:
            assert name in model.graph.initializers and name.startswith(f"aux@{stage.output}.")
            assert name not in owners
            owners[name] = stage.name
    final = plan.stages[-1]
    assert final.kind == "final" and final.loss is None and final.head is None
    # every initializer the pass added is recorded as some head's parameter or buffer
    original = set(canonicalize(lm.small_cnn()).graph.initializers)
    assert set(model.graph.initializers) - original == set(owners)


def test_final_stage_gets_no_head_even_with_one_block():
    model = canonicalize(lm.small_cnn())
    PartitionPass(blocks=1)(model)
    n_nodes = len(list(model.graph))
    assert AuxHeadsPass()(model).modified is False
    assert len(list(model.graph)) == n_nodes
    assert [v.name for v in model.graph.outputs] == ["logits"]


def test_labels_input_added_once():
    model = _annotated("fc")
    ModelLossPass()(model)
    labels = [v for v in model.graph.inputs if v.name == "labels"]
    assert len(labels) == 1
    assert labels[0].dtype == ir.DataType.INT64
    assert labels[0].shape.rank() == 1 and not isinstance(labels[0].shape[0], int)
    assert [v.name for v in model.graph.inputs] == ["input", "labels"]


def test_second_run_changes_nothing():
    model = _annotated("conv")
    before = ir.to_proto(model).SerializeToString()
    assert AuxHeadsPass(kind="conv")(model).modified is False
    assert ir.to_proto(model).SerializeToString() == before


# ---------------------------------------------------------------- initialisation


def _head_weights(model: ir.Model) -> dict[str, np.ndarray]:
    plan = Plan.read(model)
    return {n: _init(model, n) for s in plan.stages[:-1] for n in s.head.params}


@pytest.mark.parametrize("kind", ["fc", "conv", "dgl"])
def test_same_seed_same_weights_other_seed_different(kind):
    a, b, c = (_head_weights(_annotated(kind, seed=s)) for s in (7, 7, 8))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    random_params = [k for k in a if k.endswith(("weight", "bias")) and ".bn." not in k]
    assert random_params
    assert all(not np.array_equal(a[k], c[k]) for k in random_params)


def test_blocks_get_different_weights():
    model = canonicalize(lm.matmul_mlp())  # cuts relu_0, relu_1: both [N,32]
    PartitionPass(blocks=3)(model)
    AuxHeadsPass(seed=0)(model)
    first, second = (f"aux@{stage.output}.fc.weight" for stage in Plan.read(model).stages[:2])
    assert not np.array_equal(_init(model, first), _init(model, second))


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_init_bound_is_one_over_sqrt_fan_in(kind):
    model = _annotated(kind)
    fan_in = CHANNELS  # every head layer reads C channels (1x1 conv, C -> C, C -> classes)
    bound = 1.0 / np.sqrt(fan_in)
    checked = 0
    for name, w in _head_weights(model).items():
        if ".bn." in name:
            continue
        assert np.abs(w).max() <= bound, name
        assert np.abs(w).max() > 0.5 * bound, name  # drawn from the whole range, not a tiny one
        assert w.dtype == np.float32
        checked += 1
    assert checked == (4 if kind == "fc" else 9)  # fc: 2 heads x (w, b); conv: conv.w + 2 heads x (fc1, fc2)


def test_conv_head_bn_starts_at_identity():
    model = _annotated("conv")
    np.testing.assert_array_equal(_init(model, f"{HEAD1}.bn.weight"), np.ones(CHANNELS))
    np.testing.assert_array_equal(_init(model, f"{HEAD1}.bn.bias"), np.zeros(CHANNELS))
    np.testing.assert_array_equal(_init(model, f"{HEAD1}.bn.running_mean"), np.zeros(CHANNELS))
    np.testing.assert_array_equal(_init(model, f"{HEAD1}.bn.running_var"), np.ones(CHANNELS))


# ---------------------------------------------------------------- errors


def test_unknown_kind():
    with pytest.raises(LLCompileError, match="unknown aux head 'mlp'.*fc.*conv"):
        AuxHeadsPass(kind="mlp")


def test_without_plan_is_a_precondition_error():
    model = canonicalize(lm.small_cnn())
    with pytest.raises(ir.passes.PreconditionError, match="PartitionPass"):
        AuxHeadsPass()(model)


# ---------------------------------------------------------------- validity and numerics


def _gemm(x, model, prefix):
    return x @ _init(model, f"{prefix}.weight").T + _init(model, f"{prefix}.bias")


def _numpy_head_logits(kind: str, model: ir.Model, head: str, a: np.ndarray) -> np.ndarray:
    """The head reading cut activation ``a``, computed in numpy (float64) from its weights: ``fc``
    is GAP (4-D cuts) then a Gemm; ``conv`` is 1x1 conv + BN on batch statistics (it starts as the
    identity affine map) + ReLU, GAP (4-D cuts), then Gemm + ReLU + Gemm; ``dgl`` the same with
    torch's 3x3 conv, stride 2, padding 1 (float64) in place of the 1x1 conv."""
    a = a.astype(np.float64)
    if kind in ("conv", "dgl") and a.ndim == 4:
        w = _init(model, f"{head}.conv.weight")
        if kind == "conv":
            y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], a)
        else:
            y = torch.nn.functional.conv2d(torch.from_numpy(a), torch.from_numpy(w).double(), stride=2,
                                           padding=1).numpy()
        mean, var = y.mean(axis=(0, 2, 3), keepdims=True), y.var(axis=(0, 2, 3), keepdims=True)
        a = np.maximum((y - mean) / np.sqrt(var + 1e-5), 0.0)
    features = a.mean(axis=(2, 3)) if a.ndim == 4 else a
    if kind == "fc":
        return _gemm(features, model, f"{head}.fc")
    return _gemm(np.maximum(_gemm(features, model, f"{head}.fc1"), 0.0), model, f"{head}.fc2")


@pytest.mark.parametrize("kind", ["fc", "conv", "dgl"])
def test_annotated_model_passes_the_checker_and_computes_heads_and_losses(kind):
    """With the model's own loss added: valid ONNX, and onnxruntime's head logits and every loss (both
    aux losses and the model's) equal numpy's from the cut activations and the weights."""
    model = _annotated(kind)
    ModelLossPass()(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    x, labels = _batch()
    out = _run(model, [CUT_4D, CUT_2D, f"{HEAD1}.logits", f"{HEAD2}.logits"], x, labels)
    for head, cut, stage in [(HEAD1, CUT_4D, "block1"), (HEAD2, CUT_2D, "block2")]:
        logits = _numpy_head_logits(kind, model, head, out[cut])
        np.testing.assert_allclose(out[f"{head}.logits"], logits, rtol=1e-4, atol=1e-5, err_msg=head)
        np.testing.assert_allclose(out[f"{stage}.aux_loss"], softmax_cross_entropy(logits, labels), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], softmax_cross_entropy(out["logits"], labels), rtol=1e-5)


def test_fc_head_numerics():
    model = _annotated("fc")
    x, labels = _batch()
    out = _run(model, [CUT_4D, CUT_2D, f"{HEAD1}.logits", f"{HEAD2}.logits"], x, labels)
    # head logits recomputed in numpy from the cut activations and the head weights
    logits1 = _gemm(out[CUT_4D].mean(axis=(2, 3)), model, f"{HEAD1}.fc")
    logits2 = _gemm(out[CUT_2D], model, f"{HEAD2}.fc")
    np.testing.assert_allclose(out[f"{HEAD1}.logits"], logits1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[f"{HEAD2}.logits"], logits2, rtol=1e-5, atol=1e-5)
    assert out["block1.aux_loss"].shape == ()
    np.testing.assert_allclose(out["block1.aux_loss"], softmax_cross_entropy(logits1, labels), rtol=1e-5)
    np.testing.assert_allclose(out["block2.aux_loss"], softmax_cross_entropy(logits2, labels), rtol=1e-5)
    # the model's own output is unchanged by the heads
    plain = ort_session(ir.to_proto(canonicalize(lm.small_cnn()))).run(None, {"input": x})[0]
    np.testing.assert_allclose(out["logits"], plain, rtol=1e-6, atol=1e-6)


def test_conv_head_numerics():
    model = _annotated("conv")
    x, labels = _batch()
    out = _run(model, [CUT_4D, f"{HEAD1}.logits"], x, labels)
    logits = _numpy_head_logits("conv", model, HEAD1, out[CUT_4D])
    np.testing.assert_allclose(out[f"{HEAD1}.logits"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["block1.aux_loss"], softmax_cross_entropy(logits, labels), rtol=1e-5)


# ---------------------------------------------------------------- cheaper heads: pooled, reduced width


def test_pooled_fc_head_reads_each_pxp_window_mean():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D, CUT_2D])(model)
    AuxHeadsPass(kind="fc", pool=2)(model)
    assert Plan.read(model).stages[0].head.pool == 2
    assert _init(model, f"{HEAD1}.fc.weight").shape == (CLASSES, CHANNELS * 4)  # C * 2 * 2 features
    assert _init(model, f"{HEAD2}.fc.weight").shape == (CLASSES, CHANNELS)  # a 2-D cut is not pooled
    x, labels = _batch()
    out = _run(model, [CUT_4D, f"{HEAD1}.logits"], x, labels)
    a = out[CUT_4D].astype(np.float64)  # [N, 8, 8, 8] -> 2x2 windows of 4x4, flattened as C, P, P
    pooled = a.reshape(len(a), CHANNELS, 2, 4, 2, 4).mean(axis=(3, 5)).reshape(len(a), -1)
    logits = _gemm(pooled, model, f"{HEAD1}.fc")
    np.testing.assert_allclose(out[f"{HEAD1}.logits"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["block1.aux_loss"], softmax_cross_entropy(logits, labels), rtol=1e-5)


def test_reduced_width_conv_head_has_round_w_c_channels():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    AuxHeadsPass(kind="conv", width=0.3)(model)
    hidden = round(0.3 * CHANNELS)  # 2
    assert _init(model, f"{HEAD1}.conv.weight").shape == (hidden, CHANNELS, 1, 1)
    assert _init(model, f"{HEAD1}.fc1.weight").shape == (hidden, hidden)
    assert _init(model, f"{HEAD1}.fc2.weight").shape == (CLASSES, hidden)
    x, labels = _batch()
    out = _run(model, [CUT_4D, f"{HEAD1}.logits"], x, labels)
    logits = _numpy_head_logits("conv", model, HEAD1, out[CUT_4D])
    np.testing.assert_allclose(out[f"{HEAD1}.logits"], logits, rtol=1e-4, atol=1e-5)


def test_pooled_reduced_width_conv_head_numerics():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    AuxHeadsPass(kind="conv", width=0.5, pool=2)(model)
    x, labels = _batch()
    out = _run(model, [CUT_4D, f"{HEAD1}.logits"], x, labels)
    a = out[CUT_4D].astype(np.float64)
    y = np.einsum("oc,nchw->nohw", _init(model, f"{HEAD1}.conv.weight")[:, :, 0, 0], a)  # 8 -> 4 channels
    mean, var = y.mean(axis=(0, 2, 3), keepdims=True), y.var(axis=(0, 2, 3), keepdims=True)
    y = np.maximum((y - mean) / np.sqrt(var + 1e-5), 0.0)
    pooled = y.reshape(len(y), 4, 2, 4, 2, 4).mean(axis=(3, 5)).reshape(len(y), -1)  # 4 channels x 2 x 2
    logits = _gemm(np.maximum(_gemm(pooled, model, f"{HEAD1}.fc1"), 0.0), model, f"{HEAD1}.fc2")
    np.testing.assert_allclose(out[f"{HEAD1}.logits"], logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["fc", "conv", "dgl"])
def test_a_head_on_a_batch_subset_reads_every_kth_sample(kind):
    """``subsample`` 3 on a batch of 7: the head (its BN on the subset's statistics) and its loss see
    samples 0, 3 and 6; the block's output and the model's loss still see all 7."""
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D, CUT_2D])(model)
    AuxHeadsPass(kind=kind, subsample=3)(model)
    ModelLossPass()(model)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    plan = Plan.read(model)
    assert [s.head.subsample for s in plan.stages[:-1]] == [3, 3] and plan.options["aux_subsample"] == 3
    x, labels = _batch(7)
    out = _run(model, [CUT_4D, CUT_2D, f"{HEAD1}.logits", f"{HEAD2}.logits"], x, labels)
    assert out[CUT_4D].shape[0] == 7 and out["logits"].shape[0] == 7
    for head, cut, stage in [(HEAD1, CUT_4D, "block1"), (HEAD2, CUT_2D, "block2")]:
        logits = _numpy_head_logits(kind, model, head, out[cut][::3])
        np.testing.assert_allclose(out[f"{head}.logits"], logits, rtol=1e-4, atol=1e-5, err_msg=head)
        np.testing.assert_allclose(out[f"{stage}.aux_loss"], softmax_cross_entropy(logits, labels[::3]), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], softmax_cross_entropy(out["logits"], labels), rtol=1e-5)


def test_a_head_on_the_whole_batch_records_no_subsample():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    AuxHeadsPass(kind="fc", subsample=1)(model)
    assert Plan.read(model).stages[0].head.subsample is None
    assert not any(node.op_type == "Slice" for node in _head_nodes(model, "block1"))


@pytest.mark.parametrize("options, fragment", [
    (dict(kind="fc", subsample=0), "aux_subsample must be >= 1"),
    (dict(kind="fc", width=0.5), "aux_width applies to the conv and dgl aux heads only"),
    (dict(kind="conv", width=1.5), "aux_width must be in"),
    (dict(kind="fc", pool=0), "aux_pool must be >= 1"),
])
def test_bad_cheap_head_options(options, fragment):
    with pytest.raises(LLCompileError, match=fragment):
        AuxHeadsPass(**options)


def test_pool_that_does_not_divide_the_activation_is_refused():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    with pytest.raises(LLCompileError, match="aux_pool=3: the spatial sizes \\[8, 8\\]"):
        AuxHeadsPass(kind="fc", pool=3)(model)


# ---------------------------------------------------------------- token tensors (transformers, Mixers)


def _layer_norm(a: np.ndarray, model: ir.Model, prefix: str) -> np.ndarray:
    normalised = (a - a.mean(axis=-1, keepdims=True)) / np.sqrt(a.var(axis=-1, keepdims=True) + 1e-5)
    return normalised * _init(model, f"{prefix}.weight") + _init(model, f"{prefix}.bias")


# the model's own head, in numpy: ViT head(norm(x)[:, 0]), Mixer head(norm(x).mean(1)),
# ConvNeXt head(norm(x.mean((2, 3))))
TOKEN_HEADS = {
    "vit": lambda a, m, h: _gemm(_layer_norm(a, m, f"{h}.norm")[:, 0], m, f"{h}.fc"),
    "mixer": lambda a, m, h: _gemm(_layer_norm(a, m, f"{h}.norm").mean(axis=1), m, f"{h}.fc"),
    "convnext": lambda a, m, h: _gemm(_layer_norm(a.mean(axis=(2, 3)), m, f"{h}.norm"), m, f"{h}.fc"),
}


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_fc_head_reads_a_residual_stream_as_the_models_head_does(tmp_path, name):
    export_tiny(name, tmp_path / "m.onnx")
    model = load(tmp_path / "m.onnx")
    cut = next(c for c in analyze(model).cut_points if len(value_named(model.graph, c).shape) > 2)
    PartitionPass(cuts=[cut])(model)
    AuxHeadsPass(kind="fc")(model)
    head = f"aux@{cut}"
    features = value_named(model.graph, cut).shape[-1 if name != "convnext" else 1]
    assert _init(model, f"{head}.norm.weight").shape == (features,)
    assert _init(model, f"{head}.fc.weight").shape == (CLASSES, features)
    assert {f"{head}.norm.weight", f"{head}.norm.bias"} <= set(Plan.read(model).stages[0].head.params)
    x = np.random.default_rng(0).standard_normal((3, *INPUT_SHAPE)).astype(np.float32)
    labels = np.array([1, 2, 3])
    out = _run(model, [cut, f"{head}.logits"], x, labels)
    logits = TOKEN_HEADS[name](out[cut].astype(np.float64), model, head)
    np.testing.assert_allclose(out[f"{head}.logits"], logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["block1.aux_loss"], softmax_cross_entropy(logits, labels), rtol=1e-5)


def test_conv_head_on_tokens_is_the_readout_then_the_mlp(tmp_path):
    export_tiny("mixer", tmp_path / "m.onnx")
    model = load(tmp_path / "m.onnx")
    cut = analyze(model).cut_points[1]
    PartitionPass(cuts=[cut])(model)
    AuxHeadsPass(kind="conv")(model)
    head = f"aux@{cut}"
    assert f"{head}.conv.weight" not in model.graph.initializers  # no 1x1 conv on a token tensor
    x = np.random.default_rng(0).standard_normal((3, *INPUT_SHAPE)).astype(np.float32)
    out = _run(model, [cut, f"{head}.logits"], x, np.array([1, 2, 3]))
    features = _layer_norm(out[cut].astype(np.float64), model, f"{head}.norm").mean(axis=1)
    logits = _gemm(np.maximum(_gemm(features, model, f"{head}.fc1"), 0.0), model, f"{head}.fc2")
    np.testing.assert_allclose(out[f"{head}.logits"], logits, rtol=1e-4, atol=1e-5)


def test_augmented_head_on_a_vit_copies_the_later_blocks_with_the_models_norm_and_class_token(tmp_path):
    export_tiny("vit", tmp_path / "m.onnx")
    model = load(tmp_path / "m.onnx")
    cuts = analyze(model).cut_points
    PartitionPass(cuts=[cuts[1]])(model)  # after block 0's attention
    AuxHeadsPass(kind="augmented", depth=1.0)(model)
    head = f"aux@{cuts[1]}"
    stage = Plan.read(model).stages[0]
    # block 0's MLP, block 1's attention, block 1's MLP with the model's norm and class token
    assert stage.head.segments == [2, 3, 4]
    assert {"norm.weight", "norm.bias", "blocks.1.norm1.weight"} <= set(stage.head.copied_from.values())
    gemm = next(n for n in model.graph if n.outputs[0].name == f"{head}.logits")
    assert gemm.inputs[0].producer().op_type == "Gather"  # the copies reduced the tokens: no norm of its own
    x = np.random.default_rng(0).standard_normal((3, *INPUT_SHAPE)).astype(np.float32)
    out = _run(model, [cuts[-1], gemm.inputs[0].name], x, np.array([1, 2, 3]))
    # the copies start with the model's weights: the head's classifier reads the model's own class token
    np.testing.assert_allclose(out[gemm.inputs[0].name], out[cuts[-1]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vit", "mixer"])
def test_pool_is_refused_where_every_cut_point_is_a_token_tensor(tmp_path, name):
    export_tiny(name, tmp_path / "m.onnx")
    model = load(tmp_path / "m.onnx")
    PartitionPass(cuts=[analyze(model).cut_points[1]])(model)
    with pytest.raises(LLCompileError, match="aux_pool=2 pools feature maps .* every cut point of this model is a "
                                             "token tensor"):
        AuxHeadsPass(kind="fc", pool=2)(model)


class ConvStemTokens(torch.nn.Module):
    """A conv stem (an 8x8 feature map), then its 2x2 patches as tokens through a residual MLP: cut points of
    both kinds."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        self.patches = torch.nn.Conv2d(8, 16, 4, stride=4)
        self.mlp = torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 32), torch.nn.GELU(),
                                       torch.nn.Linear(32, 16))
        self.head = torch.nn.Linear(16, CLASSES)

    def forward(self, x):
        tokens = self.patches(self.stem(x)).flatten(2).transpose(1, 2)
        return self.head((tokens + self.mlp(tokens)).mean(dim=1))


def test_pool_applies_to_the_feature_map_heads_only_and_the_program_says_so(tmp_path):
    torch.manual_seed(0)
    export(ConvStemTokens(), tmp_path / "m.onnx", num_classes=CLASSES, input_shape=INPUT_SHAPE)
    model = load(tmp_path / "m.onnx")
    graph = model.graph
    cut_points = analyze(model).cut_points
    feature_map = next(c for c in cut_points if len(value_named(graph, c).shape) == 4)
    tokens = next(c for c in cut_points if is_token_tensor(value_named(graph, c)))
    program = transform(model, "dbl", cuts=[feature_map, tokens], aux_pool=2)
    heads = {stage.output: stage.head for stage in program.stages if stage.head}
    assert heads[feature_map].pool == 2 and heads[tokens].pool is None
    nodes = [node for stage in program.stages for node in stage.model.graph.node]
    assert [n.output[0] for n in nodes if n.op_type == "AveragePool"] == [f"aux@{feature_map}.pool"]
    weights = {i.name: i.dims for stage in program.stages for i in stage.model.graph.initializer}
    assert list(weights[f"aux@{feature_map}.fc.weight"]) == [CLASSES, 8 * 2 * 2]  # 8 channels pooled to 2x2
    assert list(weights[f"aux@{tokens}.fc.weight"]) == [CLASSES, 16]  # the token mean's 16 features
    text = render_text(describe_program(program))
    assert text.count("aux_pool=2 does not apply here") == 1
    assert text.index("aux_pool=2 does not apply here") > text.index(f"aux head fc: logits aux@{tokens}.logits")
