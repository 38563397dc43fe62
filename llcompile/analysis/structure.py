"""Read-only analysis of a canonical model: layers, cut points, segments, parameters.

A *layer* is a parametric op (Conv, Gemm, MatMul with a weight) with the non-parametric ops
that follow it. A *cut point* is a tensor that every path from the data input to the output
passes through (a dominator of the output in the dataflow graph) and that is the last such
tensor before a parametric op: the boundaries a block can start at. A *segment* is what lies between two consecutive cut
points. Nothing here mutates the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx_ir as ir

from llcompile.errors import LLCompileError
from llcompile.analysis.macs import forward_macs
from llcompile.frontend.importer import ModelSource, load
from llcompile.ops import PARAMETRIC_OPS, PROBABILITY_OPS


@dataclass
class Layer:
    name: str
    op: str  # Conv, DepthwiseConv, GroupedConv, Gemm, MatMul
    weight: str
    output: str
    output_shape: list
    params: int
    macs: int
    trailing_ops: list[str] = field(default_factory=list)
    segment: int = 0
    trailing_nodes: list[str] = field(default_factory=list)  # node names of trailing_ops


@dataclass
class Segment:
    index: int
    input: str
    output: str
    layers: list[str]
    macs: int
    params: int
    output_shape: list


@dataclass
class ModelAnalysis:
    input: str
    input_shape: list
    output: str
    logits: str
    num_classes: int | None
    layers: list[Layer]
    cut_points: list[str]
    segments: list[Segment]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def to_dict(self) -> dict:
        return {**asdict(self), "macs": self.macs, "params": self.params}


def data_input(graph: ir.Graph) -> ir.Value:
    return next(v for v in graph.inputs if v.const_value is None)


def weight_input(node: ir.Node) -> ir.Value | None:
    """The constant weight operand (the second input) of a Conv/Gemm/MatMul, or None."""
    if node.op_type not in PARAMETRIC_OPS or len(node.inputs) < 2:
        return None
    weight = node.inputs[1]
    return weight if weight is not None and weight.const_value is not None else None


def is_parametric(node: ir.Node) -> bool:
    return weight_input(node) is not None


# a constant vector operand after a layer is learned: bias, Caffe "Scale", layer scale, positional embedding
LEARNED_OPERAND_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
# a constant joined to the data or broadcast to the batch is a learned token (ViT's class token)
LEARNED_TOKEN_OPS = frozenset({"Concat", "Expand"})


def parameter_roles(graph: ir.Graph) -> dict[str, str]:
    """Initializer name -> ``param`` (trained by gradient) or ``buffer`` (BN running stats).

    Other initializers (shape constants, scalars, an input normalisation before the first layer)
    are constants and are not listed.
    """
    roles: dict[str, str] = {}
    after_layer: set[ir.Value] = set()  # values computed from a layer's output
    for node in graph:
        consts = [v for v in node.inputs if v is not None and v.const_value is not None]
        follows_layer = any(v in after_layer for v in node.inputs)
        if is_parametric(node):
            roles.update({v.name: "param" for v in consts})
        elif node.op_type == "BatchNormalization":
            roles.update({v.name: "param" for v in node.inputs[1:3]})
            roles.update({v.name: "buffer" for v in node.inputs[3:5]})
        elif node.op_type in ("PRelu", "LayerNormalization"):
            roles.update({v.name: "param" for v in consts})
        elif (node.op_type in LEARNED_OPERAND_OPS and follows_layer) or node.op_type in LEARNED_TOKEN_OPS:
            roles.update({v.name: "param" for v in consts
                          if v.dtype == ir.DataType.FLOAT and v.const_value.size > 1})
        if follows_layer or is_parametric(node) or node.op_type == "BatchNormalization":
            after_layer.update(node.outputs)
    return roles


def logits_value(graph: ir.Graph) -> ir.Value:
    """The class logits: the output, or the input of a final Softmax/LogSoftmax."""
    output = graph.outputs[0]
    producer = output.producer()
    if producer is not None and producer.op_type in PROBABILITY_OPS:
        return producer.inputs[0]
    return output


def num_classes_of(logits: ir.Value) -> int | None:
    """C for logits of shape [N, C], or [N, C, 1, ..., 1] (a 1x1-conv classifier); else None."""
    shape = logits.shape
    if shape is None or shape.rank() < 2 or any(d != 1 for d in list(shape)[2:]):
        return None
    classes = shape[1]
    return classes if isinstance(classes, int) and classes >= 2 else None


def data_dependent_nodes(graph: ir.Graph) -> list[ir.Node]:
    """Nodes (in graph order) with at least one input computed from the data input."""
    data = {data_input(graph)}
    nodes = []
    for node in graph:
        if any(v in data for v in node.inputs):
            nodes.append(node)
            data.update(node.outputs)
    return nodes


def output_dominators(graph: ir.Graph) -> list[ir.Value]:
    """Values every input->output path passes through, from the input to the output.

    Classic dominator computation on the DAG of values (graph order is topological): the
    immediate dominator of a value is the nearest common dominator of the node's data inputs.
    """
    source = data_input(graph)
    idom: dict[ir.Value, ir.Value | None] = {source: None}
    depth = {source: 0}

    def common(a: ir.Value, b: ir.Value) -> ir.Value:
        while a is not b:
            if depth[a] >= depth[b]:
                a = idom[a]
            else:
                b = idom[b]
        return a

    for node in data_dependent_nodes(graph):
        data_inputs = [v for v in node.inputs if v in idom]
        dominator = data_inputs[0]
        for v in data_inputs[1:]:
            dominator = common(dominator, v)
        for out in node.outputs:
            idom[out] = dominator
            depth[out] = depth[dominator] + 1
    chain = []
    value: ir.Value | None = graph.outputs[0]
    if value not in idom:
        raise LLCompileError(f"output {value.name!r} does not depend on the input {source.name!r}")
    while value is not None:
        chain.append(value)
        value = idom[value]
    return chain[::-1]


def cut_points(graph: ir.Graph) -> list[ir.Value]:
    """Dominators of the output (input and output excluded) with a parametric op between them and
    the next dominator (the last dominator before a layer: a ResNet block's output, which feeds a
    Conv, as well as a pre-norm transformer's residual stream, which reaches its layers only
    through a LayerNormalization), keeping only those with a parametric op since the previous one,
    so that no segment is empty.

    Graph order is topological, so the data nodes between two dominators' producers are exactly
    the nodes of the segment between them.
    """
    position = {node: i for i, node in enumerate(graph)}
    parametric_positions = [position[n] for n in data_dependent_nodes(graph) if is_parametric(n)]
    dominators = output_dominators(graph)
    cuts: list[ir.Value] = []
    previous = -1
    for value, following in zip(dominators[1:-1], dominators[2:]):
        here, next_one = position[value.producer()], position[following.producer()]
        if (any(here < p <= next_one for p in parametric_positions)
                and any(previous < p <= here for p in parametric_positions)):
            cuts.append(value)
            previous = here
    return cuts


def analyze_model(model: ModelSource) -> ModelAnalysis:
    """``analyze`` of a model in any form ``llcompile.load`` takes (a path, bytes, an onnx.ModelProto or an
    onnx_ir.Model), canonicalised first: ``llcompile.analyze``."""
    return analyze(load(model))


def analyze(model: ir.Model) -> ModelAnalysis:
    """Layers, cut points, segments, MACs and parameter roles of a canonical model; never mutates it."""
    graph = model.graph
    source = data_input(graph)
    cuts = cut_points(graph)
    segment_of_value: dict[ir.Value, int] = {source: 0}
    segment_of_value.update({cut: i + 1 for i, cut in enumerate(cuts)})
    layers: list[Layer] = []
    layer_of_value: dict[ir.Value, int] = {}  # value -> index of the layer it belongs to
    for node in data_dependent_nodes(graph):
        data_inputs = [v for v in node.inputs if v in segment_of_value]
        segment = max(segment_of_value[v] for v in data_inputs)
        if is_parametric(node):
            layers.append(_make_layer(node, segment))
            owner = len(layers) - 1
        else:  # a trailing op belongs to the latest layer among its inputs' layers
            owner = max((layer_of_value[v] for v in data_inputs if v in layer_of_value), default=None)
            if owner is not None:
                layers[owner].trailing_ops.append(node.op_type)
                layers[owner].trailing_nodes.append(node.name)
        for out in node.outputs:
            segment_of_value.setdefault(out, segment)
            if owner is not None:
                layer_of_value[out] = owner
    boundaries = [source, *cuts, graph.outputs[0]]
    segments = []
    for i in range(len(boundaries) - 1):
        members = [layer for layer in layers if layer.segment == i]
        segments.append(Segment(
            index=i, input=boundaries[i].name, output=boundaries[i + 1].name,
            layers=[layer.name for layer in members], macs=sum(layer.macs for layer in members),
            params=sum(layer.params for layer in members),
            output_shape=shape_list(boundaries[i + 1])))
    logits = logits_value(graph)
    return ModelAnalysis(
        input=source.name, input_shape=shape_list(source), output=graph.outputs[0].name,
        logits=logits.name, num_classes=num_classes_of(logits), layers=layers,
        cut_points=[c.name for c in cuts], segments=segments)


def _make_layer(node: ir.Node, segment: int) -> Layer:
    weight = weight_input(node)
    op = node.op_type
    if op == "Conv":
        group = node.attributes.get("group")
        groups = group.as_int() if group is not None else 1
        if groups > 1:
            op = "DepthwiseConv" if weight.shape[1] == 1 and groups == weight.shape[0] else "GroupedConv"
    params = sum(v.const_value.size for v in node.inputs if v is not None and v.const_value is not None)
    try:
        macs = forward_macs(node)
    except ValueError as exc:
        raise LLCompileError(f"layer {node.name!r}: cannot count MACs: {exc}") from None
    return Layer(name=node.name, op=op, weight=weight.name, output=node.outputs[0].name,
                 output_shape=shape_list(node.outputs[0]), params=params, macs=macs, segment=segment)


def shape_list(value: ir.Value) -> list:
    if value.shape is None:
        return []
    return [d if isinstance(d, int) else str(d) for d in value.shape]
