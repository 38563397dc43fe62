"""ai.llcompile::SupervisedContrastiveLoss against the formula by hand (numpy, float64, loops): the
torch helper, the model-local ONNX function in onnxruntime (opsets 14 and 21) and the ORT
decomposition; autograd's gradient against finite differences."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch

from llcompile.ops.contrastive import (DOMAIN, contrastive_function, contrastive_loss_node, contrastive_nodes,
                                       supervised_contrastive_loss)
from llcompile.util.ort_session import session

TEMPERATURE = 0.1


def by_hand(features: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Khosla et al.'s L^sup_out; a sample with no other sample of its class adds 0."""
    z = features.astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / temperature
    total = 0.0
    for i in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != i and labels[p] == labels[i]]
        if positives:
            log_denominator = np.log(sum(np.exp(s[i, a]) for a in range(len(labels)) if a != i))
            total -= np.mean([s[i, p] - log_denominator for p in positives])
    return total / len(labels)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 12)
    labels[0] = 9  # a class of one sample: no positives
    return rng.standard_normal((12, 5)).astype(np.float32), labels


def test_torch_helper(batch):
    features, labels = batch
    loss = supervised_contrastive_loss(torch.from_numpy(features), torch.from_numpy(labels), TEMPERATURE)
    assert loss.item() == pytest.approx(by_hand(features, labels, TEMPERATURE), rel=1e-5)


def _model(nodes_of, opset: int) -> onnx.ModelProto:
    features = ir.Value(name="features", shape=ir.Shape(["N", 5]), type=ir.TensorType(ir.DataType.FLOAT))
    labels = ir.Value(name="labels", shape=ir.Shape(["N"]), type=ir.TensorType(ir.DataType.INT64))
    temperature = ir.Value(name="temperature", const_value=ir.tensor(np.array(TEMPERATURE, np.float32)))
    nodes = nodes_of(features, labels, temperature)
    for index, node in enumerate(nodes):
        node.name = f"n{index}"
        node.outputs[0].name = node.outputs[0].name or f"v{index}"
    nodes[-1].outputs[0].name = "loss"
    nodes[-1].outputs[0].type, nodes[-1].outputs[0].shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([])
    graph = ir.Graph([features, labels], [nodes[-1].outputs[0]], nodes=nodes, initializers=[temperature],
                     opset_imports={"": opset, DOMAIN: 1}, name="contrastive")
    model = ir.Model(graph, ir_version=8)
    function = contrastive_function(opset)
    model.functions[function.identifier()] = function
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize("opset", [14, 21])
@pytest.mark.parametrize("form", ["function", "decomposed"])
def test_onnx_forms_in_onnxruntime(batch, opset, form):
    """The node (run through its model-local function) and the function's nodes inlined, as the ORT
    backend trains them."""
    features, labels = batch
    nodes_of = (lambda *inputs: [contrastive_loss_node(*inputs)]) if form == "function" else contrastive_nodes
    (loss,) = session(_model(nodes_of, opset)).run(None, {"features": features, "labels": labels})
    assert float(loss) == pytest.approx(by_hand(features, labels, TEMPERATURE), rel=1e-5)


def test_gradient_against_finite_differences(batch):
    features, labels = batch
    x = torch.from_numpy(features).double().requires_grad_()
    torch.autograd.gradcheck(lambda f: supervised_contrastive_loss(f, torch.from_numpy(labels), TEMPERATURE), (x,))
