"""--aux-loss ce+recon: the decoder and the block's loss against torch (float64), what the plan
records, and where the term does not apply."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F

from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.passes.aux_heads import AuxHeadsPass
from llcompile.passes.model_loss import ModelLossPass
from llcompile.passes.partition import PartitionPass
from llcompile.passes.reconstruction import DECODER_MIN_CHANNELS
from llcompile.program.plan import Plan
from llcompile.util.ort_session import session as ort_session
from tests.fixtures import legacy_models as lm
from tests.reference import softmax_cross_entropy

# small_cnn: input [N,3,16,16] -> /pool/MaxPool_output_0 [N,8,8,8] -> /fc/Flatten_output_0 [N,8] -> 10 classes
CUT_4D, CUT_2D = "/pool/MaxPool_output_0", "/fc/Flatten_output_0"
HEAD = f"aux@{CUT_4D}"


def _planned(weight: float | None = 0.5, subsample: int | None = None, cuts=(CUT_4D,)) -> ir.Model:
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=list(cuts))(model)
    AuxHeadsPass(kind="fc", loss="ce+recon", recon_weight=weight, subsample=subsample)(model)
    ModelLossPass()(model)
    return model


def _outputs(model: ir.Model, names: list[str], x: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    model = ir.from_proto(ir.to_proto(model))
    produced = {v.name: v for n in model.graph for v in n.outputs}
    model.graph.outputs.extend(produced[n] for n in names if n not in {v.name for v in model.graph.outputs})
    session = ort_session(ir.to_proto(model))
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x, "labels": labels})))


def _tensor(model: ir.Model, name: str) -> torch.Tensor:
    return torch.from_numpy(model.graph.initializers[f"{HEAD}.{name}"].const_value.numpy()).double()


def _torch_reconstruction_error(model: ir.Model, block_output: np.ndarray, block_input: np.ndarray) -> float:
    """The decoder by torch's own ops in float64: nearest upsampling x2, 3x3 conv, BN on the batch's
    statistics, ReLU, 3x3 conv with bias; then the mean squared error against the block's input."""
    y = F.interpolate(torch.from_numpy(block_output).double(), scale_factor=2, mode="nearest")
    y = F.conv2d(y, _tensor(model, "decoder.conv1.weight"), padding=1)
    y = F.batch_norm(y, None, None, _tensor(model, "decoder.bn.weight"), _tensor(model, "decoder.bn.bias"),
                     training=True, eps=1e-5)
    y = F.conv2d(F.relu(y), _tensor(model, "decoder.conv2.weight"), _tensor(model, "decoder.conv2.bias"), padding=1)
    return F.mse_loss(y, torch.from_numpy(block_input).double()).item()


def _batch(n: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def test_the_block_loss_is_cross_entropy_plus_the_weighted_reconstruction_error():
    model = _planned(weight=0.5)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    x, labels = _batch()
    out = _outputs(model, [CUT_4D, f"{HEAD}.logits"], x, labels)
    error = _torch_reconstruction_error(model, out[CUT_4D], x)
    expected = softmax_cross_entropy(out[f"{HEAD}.logits"], labels) + 0.5 * error
    np.testing.assert_allclose(out["block1.aux_loss"], expected, rtol=1e-5)
    assert error > 0.1  # the term is there, and not negligible beside the cross-entropy


def test_the_decoder_reads_every_kth_sample_with_the_head():
    model = _planned(weight=2.0, subsample=3)
    x, labels = _batch(7)
    out = _outputs(model, [CUT_4D, f"{HEAD}.logits"], x, labels)
    error = _torch_reconstruction_error(model, out[CUT_4D][::3], x[::3])
    expected = softmax_cross_entropy(out[f"{HEAD}.logits"], labels[::3]) + 2.0 * error
    np.testing.assert_allclose(out["block1.aux_loss"], expected, rtol=1e-5)


def test_the_plan_records_the_weight_and_the_decoder_as_head_parameters():
    model = _planned(weight=None, cuts=(CUT_4D, CUT_2D))
    plan = Plan.read(model)
    first, second = plan.stages[:2]
    assert first.head.recon == 1.0 and plan.options["aux_loss"] == "ce+recon"
    assert plan.options["aux_recon_weight"] == 1.0
    middle = max(3, DECODER_MIN_CHANNELS)  # the block's input is the 3-channel image
    assert model.graph.initializers[f"{HEAD}.decoder.conv1.weight"].const_value.shape == (middle, 8, 3, 3)
    assert {f"{HEAD}.decoder.conv1.weight", f"{HEAD}.decoder.conv2.weight", f"{HEAD}.decoder.conv2.bias",
            f"{HEAD}.decoder.bn.weight", f"{HEAD}.decoder.bn.bias"} <= set(first.head.params)
    assert {f"{HEAD}.decoder.bn.running_mean", f"{HEAD}.decoder.bn.running_var"} <= set(first.head.buffers)
    # block 2 ends in a vector [N, 8]: nothing to decode its input from, so cross-entropy alone
    assert second.head.recon is None
    assert model.graph.outputs[[v.name for v in model.graph.outputs].index(second.loss)].producer().op_type == \
        "SoftmaxCrossEntropyLoss"


def test_cross_entropy_alone_records_no_recon():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    AuxHeadsPass(kind="fc")(model)
    plan = Plan.read(model)
    assert plan.stages[0].head.recon is None and "aux_loss" not in plan.options
    assert not any("decoder" in name for name in model.graph.initializers)


def test_per_block_weights_ramp_from_the_first_block_to_the_last():
    """InfoPro's form: block i of n gets FIRST + (LAST - FIRST) * i / (n - 1) of each term. Two blocks
    with heads: the first at the ramps' first ends, the second (a vector: no reconstruction) at their last."""
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D, CUT_2D])(model)
    AuxHeadsPass(kind="fc", loss="ce+recon", recon_weight="3:1", ce_weight=(0.5, 2))(model)
    ModelLossPass()(model)
    plan = Plan.read(model)
    first, second = plan.stages[:2]
    assert (first.head.ce, first.head.recon) == (0.5, 3.0)
    assert (second.head.ce, second.head.recon) == (2.0, None)
    assert plan.options["aux_recon_weight"] == "3:1" and plan.options["aux_ce_weight"] == "0.5:2"
    x, labels = _batch()
    second_logits = f"aux@{CUT_2D}.logits"
    out = _outputs(model, [CUT_4D, f"{HEAD}.logits", second_logits], x, labels)
    error = _torch_reconstruction_error(model, out[CUT_4D], x)
    np.testing.assert_allclose(out["block1.aux_loss"],
                               0.5 * softmax_cross_entropy(out[f"{HEAD}.logits"], labels) + 3.0 * error, rtol=1e-5)
    np.testing.assert_allclose(out["block2.aux_loss"], 2.0 * softmax_cross_entropy(out[second_logits], labels),
                               rtol=1e-5)


def test_per_block_weights_train_alike_on_both_backends():
    """A cross-entropy weight of 0 in the first block (InfoPro's K=4 start): its classifier gets no
    gradient, the block learns from the reconstruction alone."""
    import llcompile
    from tests.backends.chain import losses_on_both_backends

    program = llcompile.transform(canonicalize(lm.small_cnn()), "dbl", cuts=[CUT_4D, CUT_2D], aux_loss="ce+recon",
                                  aux_recon_weight="6:1", aux_ce_weight="0:2", boundary_policy="fixed")
    x, labels = _batch(8)
    losses = losses_on_both_backends(program, x, labels, steps=3, lr=0.05)
    np.testing.assert_allclose(losses["ort"], losses["torch"], rtol=1e-4)


@pytest.mark.parametrize("options, fragment", [
    (dict(loss="mse"), "unknown aux loss 'mse'"),
    (dict(recon_weight=0.5), "aux_recon_weight applies to an aux_loss with recon, not ce"),
    (dict(loss="ce+recon", recon_weight=0.0), "aux_recon_weight must be > 0 for one block at least"),
    (dict(loss="ce+recon", recon_weight="1:x"), "aux_recon_weight must be a number >= 0 or FIRST:LAST"),
    (dict(loss="ce+recon", recon_weight="1:2:3"), "aux_recon_weight must be a number >= 0 or FIRST:LAST"),
    (dict(ce_weight=-1.0), "aux_ce_weight must be a number >= 0"),
])
def test_bad_loss_options(options, fragment):
    with pytest.raises(LLCompileError, match=fragment):
        AuxHeadsPass(**options)


@pytest.mark.parametrize("policy", [dict(boundary_policy="adaptive"), dict(boundary_policy="schedule",
                                                                           boundary_schedule="1:2,2:1")])
@pytest.mark.parametrize("weights", [dict(aux_recon_weight="6:1"), dict(aux_ce_weight=0.0)])
def test_per_block_weights_need_blocks_that_stay_put(policy, weights):
    """A ramp is spread over the blocks a program has; adaptive judges blocks by their heads' accuracy."""
    import llcompile

    with pytest.raises(LLCompileError, match="needs blocks that stay put \\(boundary_policy='fixed'\\)"):
        llcompile.transform(canonicalize(lm.small_cnn()), "dbl", blocks=2, aux_loss="ce+recon", **weights, **policy)


def test_a_term_weighed_0_at_a_block_is_left_out_there():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D, CUT_2D])(model)
    AuxHeadsPass(kind="fc", loss="ce+contrast", contrast_weight="0:1")(model)
    first, second = Plan.read(model).stages[:2]
    assert (first.head.contrast, second.head.contrast) == (None, 1.0)
    assert f"{HEAD}.proj.weight" not in model.graph.initializers


def test_a_block_left_without_a_loss_is_refused():
    """A cross-entropy weight of 0 where no reconstruction applies (the second block ends in a vector)."""
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D, CUT_2D])(model)
    with pytest.raises(LLCompileError, match="block2 would have no loss: its aux_ce_weight is 0"):
        AuxHeadsPass(kind="fc", loss="ce+recon", ce_weight="1:0")(model)
