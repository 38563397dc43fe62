"""ModelLossPass: mean softmax cross-entropy on the model's logits, checked against numpy."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from llcompile.frontend.importer import canonicalize
from llcompile.passes.aux_heads import AuxHeadsPass
from llcompile.frontend.canonical.training_mode import TrainingModePass
from llcompile.passes.model_loss import ModelLossPass
from llcompile.passes.partition import PartitionPass
from llcompile.program.plan import Plan
from llcompile.util.ort_session import session as ort_session
from tests.fixtures import legacy_models as lm
from tests.reference import softmax_cross_entropy


def _with_loss(proto: onnx.ModelProto, blocks: int = 1) -> ir.Model:
    model = canonicalize(proto)
    PartitionPass(blocks=blocks)(model)
    result = ModelLossPass()(model)
    assert result.modified is True and result.model is model
    return model


def _run(model: ir.Model, feeds: dict, extra_outputs=()) -> dict[str, np.ndarray]:
    model = ir.from_proto(ir.to_proto(model))
    produced = {v.name: v for n in model.graph for v in n.outputs}
    model.graph.outputs.extend(produced[name] for name in extra_outputs)
    session = ort_session(ir.to_proto(model))
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.parametrize("batch", [1, 5])
def test_loss_on_logits_output(batch):
    model = _with_loss(lm.small_cnn())
    plan = Plan.read(model)
    assert plan.stages[-1].loss == "loss"
    assert [v.name for v in model.graph.outputs] == ["logits", "loss"]
    (node,) = [n for n in model.graph if n.op_type == "SoftmaxCrossEntropyLoss"]
    assert node.inputs[0].name == "logits" and node.inputs[1].name == "labels"
    assert node.attributes["reduction"].value == "mean"
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, batch).astype(np.int64)
    out = _run(model, {"input": x, "labels": labels})
    assert out["loss"].shape == ()
    np.testing.assert_allclose(out["loss"], softmax_cross_entropy(out["logits"], labels), rtol=1e-5)


def test_loss_on_softmax_input_for_a_probability_output():
    """legacy_caffe_style ends in Softmax: the loss is CE on its input `fc_1`, i.e. -log(prob)."""
    model = _with_loss(lm.legacy_caffe_style())
    TrainingModePass(training=False)(model)  # deterministic BN; the loss does not depend on it
    (node,) = [n for n in model.graph if n.op_type == "SoftmaxCrossEntropyLoss"]
    assert node.inputs[0].name == "fc_1"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = np.array([0, 3, 9, 3], dtype=np.int64)
    out = _run(model, {"data_0": x, "labels": labels}, extra_outputs=["fc_1"])
    expected = softmax_cross_entropy(out["fc_1"], labels)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-5)
    # the same number from the model's own probabilities (not CE applied to probabilities)
    prob = out["prob_1"].astype(np.float64)
    np.testing.assert_allclose(out["loss"], -np.log(prob[np.arange(4), labels]).mean(), rtol=1e-4)
    assert abs(softmax_cross_entropy(prob, labels) - expected) > 1e-2


def test_second_run_is_a_no_op():
    model = _with_loss(lm.small_cnn())
    before = ir.to_proto(model).SerializeToString()
    assert ModelLossPass()(model).modified is False
    assert ir.to_proto(model).SerializeToString() == before


def test_labels_shared_with_aux_heads():
    model = canonicalize(lm.small_cnn())
    PartitionPass(blocks=3)(model)
    AuxHeadsPass()(model)
    ModelLossPass()(model)
    assert [v.name for v in model.graph.inputs] == ["input", "labels"]
    plan = Plan.read(model)
    assert [s.loss for s in plan.stages] == ["block1.aux_loss", "block2.aux_loss", "loss"]
    assert plan.options == {"blocks": 3, "aux_head": "fc"}
    losses = [n for n in model.graph if n.op_type == "SoftmaxCrossEntropyLoss"]
    assert len(losses) == 3 and all(n.inputs[1] is model.graph.inputs[1] for n in losses)
    onnx.checker.check_model(ir.to_proto(model), full_check=True)


def test_two_dimensional_mlp_logits():
    model = _with_loss(lm.matmul_mlp(), blocks=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 6).astype(np.int64)
    out = _run(model, {"x": x, "labels": labels})
    np.testing.assert_allclose(out["loss"], softmax_cross_entropy(out["logits"], labels), rtol=1e-5)


def test_without_plan_is_a_precondition_error():
    with pytest.raises(ir.passes.PreconditionError, match="PartitionPass"):
        ModelLossPass()(canonicalize(lm.small_cnn()))
