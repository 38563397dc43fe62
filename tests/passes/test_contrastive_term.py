"""--aux-loss with contrast: the block's loss against the formula by hand on the head's own
projection, what the plan records, both backends alike with InfoPro's per-block weights, the
projection's MACs by hand, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

import llcompile
from llcompile.cost import cost_program
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.passes.aux_heads import CONTRAST_DIM, AuxHeadsPass
from llcompile.passes.model_loss import ModelLossPass
from llcompile.passes.partition import PartitionPass
from llcompile.program.plan import Plan
from tests.backends.chain import losses_on_both_backends
from tests.fixtures import legacy_models as lm
from tests.ops.test_contrastive import by_hand
from tests.passes.test_reconstruction import CUT_2D, CUT_4D, HEAD, _batch, _outputs
from tests.reference import softmax_cross_entropy

FLATTEN = f"{HEAD}.flatten"  # what the fc head's classifier reads


def test_the_block_loss_adds_the_weighted_contrastive_loss_of_the_projection():
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D])(model)
    AuxHeadsPass(kind="fc", loss="ce+contrast", contrast_weight=0.5, temperature=0.2)(model)
    ModelLossPass()(model)
    projection = model.graph.node(f"{HEAD}.proj")
    assert projection.inputs[0].name == FLATTEN == model.graph.node(f"{HEAD}.logits").inputs[0].name
    plan = Plan.read(model)
    assert plan.stages[0].head.contrast == 0.5 and f"{HEAD}.proj.weight" in plan.stages[0].head.params
    assert (plan.options["aux_loss"], plan.options["aux_contrast_weight"], plan.options["aux_temperature"]) == \
        ("ce+contrast", 0.5, 0.2)
    x, labels = _batch(8)
    out = _outputs(model, [f"{HEAD}.proj", f"{HEAD}.logits"], x, labels)
    assert out[f"{HEAD}.proj"].shape == (8, CONTRAST_DIM)
    expected = (softmax_cross_entropy(out[f"{HEAD}.logits"], labels)
                + 0.5 * by_hand(out[f"{HEAD}.proj"], labels, 0.2))
    np.testing.assert_allclose(out["block1.aux_loss"], expected, rtol=1e-5)


def test_infopro_contrastive_form_trains_alike_on_both_backends():
    """No cross-entropy, a contrastive term ramping up and a reconstruction term ramping down."""
    program = llcompile.transform(canonicalize(lm.small_cnn()), "dbl", cuts=[CUT_4D, CUT_2D], aux_head="dgl",
                                  aux_loss="ce+contrast+recon", aux_ce_weight=0.0, aux_contrast_weight="1:2",
                                  aux_recon_weight="1:0.5", boundary_policy="fixed")
    heads = [stage.head for stage in program.stages[:2]]
    assert [(h.ce, h.contrast, h.recon) for h in heads] == [(0.0, 1.0, 1.0), (0.0, 2.0, None)]
    x, labels = _batch(8)
    losses = losses_on_both_backends(program, x, labels, steps=3, lr=0.05)
    np.testing.assert_allclose(losses["ort"], losses["torch"], rtol=1e-4)


def test_the_projection_is_costed_by_hand(zoo_file):
    """ResNet-20 at K=2 with the dgl head: the projection reads the head's 128-unit hidden layer."""
    model = zoo_file("resnet20", input_shape=(3, 8, 8))
    plain, contrast = (cost_program(llcompile.transform(model, "dbl", blocks=2, aux_head="dgl", **options),
                                    batch_size=4).stages[0].head for options in ({}, {"aux_loss": "ce+contrast"}))
    projection = 128 * CONTRAST_DIM
    assert contrast.macs_forward - plain.macs_forward == projection
    assert contrast.macs_backward_dw - plain.macs_backward_dw == projection
    assert contrast.params - plain.params == projection + CONTRAST_DIM


@pytest.mark.parametrize("options, fragment", [
    (dict(contrast_weight=0.5), "aux_contrast_weight applies to an aux_loss with contrast, not ce"),
    (dict(loss="ce+recon", temperature=0.1), "aux_temperature applies to an aux_loss with contrast"),
    (dict(loss="ce+contrast", temperature=0.005), "aux_temperature must be >= 0.01"),
    (dict(loss="ce+contrast", contrast_weight="0:0"), "aux_contrast_weight must be > 0 for one block at least"),
])
def test_bad_contrast_options(options, fragment):
    with pytest.raises(LLCompileError, match=fragment):
        AuxHeadsPass(**options)


def test_the_contrastive_term_alone_is_a_loss():
    """A cross-entropy weight of 0 is accepted where the contrastive term is there."""
    model = canonicalize(lm.small_cnn())
    PartitionPass(cuts=[CUT_4D, CUT_2D])(model)
    AuxHeadsPass(kind="fc", loss="ce+contrast", ce_weight=0.0)(model)
    assert [(s.head.ce, s.head.contrast) for s in Plan.read(model).stages[:2]] == [(0.0, 1.0), (0.0, 1.0)]


def test_torchscript_runs_the_loss_like_eager():
    from llcompile.backends.base import OptimizerConfig
    from llcompile.backends.torch.backend import TorchBackend
    from tests.backends.chain import train_chain

    program = llcompile.transform(canonicalize(lm.small_cnn()), "dbl", cuts=[CUT_4D], aux_loss="ce+contrast")
    x, labels = _batch(8)
    losses = {}
    for mode in ("eager", "script"):
        backend = TorchBackend(mode=mode)
        stages = backend.build(program, OptimizerConfig())
        losses[mode] = [train_chain(stages, *backend.to_batch(x, labels), 0.05) for _ in range(2)]
    np.testing.assert_allclose(losses["script"], losses["eager"], rtol=1e-6)
