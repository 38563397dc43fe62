"""``ai.llcompile::SupervisedContrastiveLoss``, llcompile's own loss op: InfoPro's contrastive term.

``loss = SupervisedContrastiveLoss(features [N, D], labels [N], temperature [])``, the supervised
contrastive loss (Khosla et al. 2020, the form InfoPro's contrastive heads train with): each
sample's features are scaled to unit length, ``s_ij = z_i . z_j / temperature``, and

    loss = -mean_i  mean_{p in P(i)}  log( exp(s_ip) / sum_{a != i} exp(s_ia) )

with P(i) the other samples of i's class. A sample with no other sample of its class in the batch
adds 0 to the mean (where the reference implementation divides by zero).

One node in the graph: its [N, N] similarities live inside it, so that the cost model, whose
counts are per sample, never sees a tensor of two batch axes. Those N x D MACs of the
similarities and N x N element operations per sample (16,384 and 128 at batch 128, D = 128) are
not counted: they are per-sample costs that depend on the batch size. The model-local ONNX
function (``contrastive_function``) makes the node runnable by onnxruntime as it is (``verify``),
and the ORT backend trains its nodes inlined (as every model-local function); the torch backend
calls ``supervised_contrastive_loss``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch
from torch import Tensor, fx

from llcompile.ops.hebbian import DOMAIN, DOMAIN_VERSION
from llcompile.ops.onnx_nodes import constant_node, ints_node, op_node
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, OpsetRange, Role, no_macs, register
from llcompile.ops.torch_builder import TorchBuilder

OP_TYPE = "SupervisedContrastiveLoss"
NORM_EPSILON = 1e-12  # inside the square root of a feature vector's squared length
# subtracted from each sample's similarity to itself: exp() of it is 0 in float32 while 1 / temperature
# (the largest similarity) is far smaller (passes/aux_heads.MIN_TEMPERATURE)
SELF_PENALTY = 1e4
NO_POSITIVES = 1e-12  # added to each sample's count of positives: 0 / NO_POSITIVES = 0 for a sample with none


def supervised_contrastive_loss(features: Tensor, labels: Tensor, temperature: float,
                                norm_epsilon: float = NORM_EPSILON, self_penalty: float = SELF_PENALTY,
                                no_positives: float = NO_POSITIVES) -> Tensor:
    """The op on the torch backend (generated code calls it); the same steps as ``contrastive_nodes``.
    The constants are arguments because TorchScript reads no module-level floats."""
    z = features / torch.sqrt((features * features).sum(dim=1, keepdim=True) + norm_epsilon)
    similarity = torch.mm(z, z.t()) / temperature
    eye = torch.eye(labels.shape[0], dtype=similarity.dtype, device=similarity.device)
    same = (labels.unsqueeze(1) == labels.unsqueeze(0)).to(similarity.dtype)
    log_prob = torch.log_softmax(similarity - self_penalty * eye, dim=1)
    positives = same - eye
    per_sample = (positives * log_prob).sum(dim=1) / (positives.sum(dim=1) + no_positives)
    return -per_sample.mean()


def contrastive_nodes(features: ir.Value, labels: ir.Value, temperature: ir.Value) -> list[ir.Node]:
    """The op in standard ONNX (opset 13-21: ReduceSum's and Unsqueeze's axes are inputs); the last
    node's output is the loss. Its values are unnamed: the caller names them."""
    nodes: list[ir.Node] = []

    def add(node: ir.Node) -> ir.Value:
        nodes.append(node)
        return node.outputs[0]

    def constant(value: float) -> ir.Value:
        return add(constant_node(np.array(value, np.float32)))

    features_axis, rows_axis, columns_axis = add(ints_node([1])), add(ints_node([1])), add(ints_node([0]))
    squared_length = add(op_node("ReduceSum", add(op_node("Mul", features, features)), features_axis, keepdims=1))
    length = add(op_node("Sqrt", add(op_node("Add", squared_length, constant(NORM_EPSILON)))))
    z = add(op_node("Div", features, length))
    products = add(op_node("MatMul", z, add(op_node("Transpose", z, perm=[1, 0]))))
    similarity = add(op_node("Div", products, temperature))
    same_label = add(op_node("Equal", add(op_node("Unsqueeze", labels, rows_axis)),
                             add(op_node("Unsqueeze", labels, columns_axis))))
    same = add(op_node("Cast", same_label, to=ir.DataType.FLOAT))
    eye = add(op_node("EyeLike", same))
    masked = add(op_node("Sub", similarity, add(op_node("Mul", eye, constant(SELF_PENALTY)))))
    log_prob = add(op_node("LogSoftmax", masked, axis=1))
    positives = add(op_node("Sub", same, eye))
    positive_log_prob = add(op_node("ReduceSum", add(op_node("Mul", positives, log_prob)), features_axis, keepdims=0))
    count = add(op_node("Add", add(op_node("ReduceSum", positives, features_axis, keepdims=0)),
                        constant(NO_POSITIVES)))
    per_sample = add(op_node("Div", positive_log_prob, count))
    add(op_node("Neg", add(op_node("ReduceMean", per_sample, keepdims=0))))
    return nodes


def contrastive_function(opset: int) -> ir.Function:
    """The model-local function definition for a model whose standard opset is ``opset``."""
    inputs = [ir.Value(name=name) for name in ("features", "labels", "temperature")]
    nodes = contrastive_nodes(*inputs)
    for index, node in enumerate(nodes):
        node.name = f"{index}.{node.op_type}"
        node.outputs[0].name = f"{index}.{node.op_type}_output"
    nodes[-1].outputs[0].name = "loss"
    graph = ir.Graph(inputs, [nodes[-1].outputs[0]], nodes=nodes, opset_imports={"": opset})
    return ir.Function(DOMAIN, OP_TYPE, graph=graph, attributes=[])


def contrastive_loss_node(features: ir.Value, labels: ir.Value, temperature: ir.Value) -> ir.Node:
    """The op's node: a scalar float loss."""
    node = ir.Node(DOMAIN, OP_TYPE, [features, labels, temperature], version=DOMAIN_VERSION)
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    node.outputs[0].shape = ir.Shape([])
    return node


def _supervised_contrastive_loss(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    return g.call(supervised_contrastive_loss, g.x(node, 0), g.x(node, 1), g.scalar(node, 2, "temperature"))


register(OpFacts(OP_TYPE, Role.LOSS, _supervised_contrastive_loss, no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.INPUT), opsets=OpsetRange(DOMAIN_VERSION, DOMAIN_VERSION), domain=DOMAIN))
