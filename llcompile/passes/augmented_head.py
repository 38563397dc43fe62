"""The ``augmented`` aux head: a block's aux net built from copies of the model's own later
segments, in the spirit of AugLocal (Ma et al., ICLR 2024), which builds each local learner's
auxiliary network from a uniformly chosen subset of the layers after it.

Which segments (``select_segments``), for the block that ends at cut ``c``:

1. *Later segments*: the segments after ``c``, excluding the model's last one (the one that
   produces the logits: its classifier is replaced by a fresh one). Call their number ``n``.
2. *Depth*: ``d = round(aux_depth * n)`` of them, half rounding up, at least 1 when ``n >= 1``
   (0 when ``n == 0``: the head is then GAP + a fresh classifier, the ``fc`` head). They are
   spaced uniformly and always include the deepest: the later segments are split into ``d``
   runs of (nearly) equal length and the last segment of each run is taken, i.e. the k-th
   selected one (k = 1..d) is later segment ``ceil(k * n / d)`` (1-based). Later blocks have
   fewer later segments, so their heads are shallower, as in AugLocal.
3. *Shape compatibility*: every copied segment must receive a tensor of the per-sample shape its
   original input had. So every later segment that changes the per-sample shape (a downsampling
   residual block, the pooling + flatten before the classifier) and lies before the deepest
   selected one is added to the selection. Between two selected segments, then, no segment
   changes the shape, and the chain fits; should it still not (dimensions that are not static),
   compilation stops with an error.

How they are copied (``copy_segments``): every node between a segment's input and output cut
tensors (trailing ops such as pooling and flatten included) is cloned into the graph, reading the
block's cut tensor (the first copy) or the previous copy's output. Every initializer a copied node
reads is copied into a new initializer ``<head prefix>.<original name>`` holding the model's
current values: the head's own weights, never shared with the model (BatchNormalization's running
statistics come along and stay buffers). Constant nodes are cloned like any node; a segment that
reads any other tensor from outside itself (a graph input other than through its cut) is refused.
"""

from __future__ import annotations

import math

import onnx_ir as ir

from llcompile.analysis.structure import ModelAnalysis
from llcompile.errors import LLCompileError
from llcompile.frontend.graph_builder import GraphBuilder
from llcompile.util.option_names import option_name

DEFAULT_AUX_DEPTH = 0.1  # measured: docs/results.md#boundaries


def check_depth(depth: float) -> float:
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 < depth <= 1:
        raise LLCompileError(f"{option_name('aux_depth')} must be in (0, 1], got {depth!r}")
    return float(depth)


def select_segments(analysis: ModelAnalysis, cut: str, depth: float) -> list[int]:
    """Indices (in ``analysis.segments``) of the segments the head at ``cut`` copies, in order."""
    outputs = [segment.output for segment in analysis.segments]
    if cut not in outputs[:-1]:
        raise LLCompileError(f"augmented aux head: {cut!r} is not a cut point of the model")
    later = list(range(outputs.index(cut) + 1, len(analysis.segments) - 1))  # the classifier's segment excluded
    n = len(later)
    if n == 0:
        return []
    d = min(n, max(1, math.floor(depth * n + 0.5)))
    selected = {later[-(-k * n // d) - 1] for k in range(1, d + 1)}  # ceil(k n / d), 1-based
    deepest = later[-1]
    selected.update(s for s in later if s < deepest and _per_sample(_input_shape(analysis, s))
                    != _per_sample(analysis.segments[s].output_shape))
    chosen = sorted(selected)
    _check_chain(analysis, cut, chosen)
    return chosen


def copy_segments(builder: GraphBuilder, analysis: ModelAnalysis, indices: list[int],
                  x: ir.Value) -> tuple[ir.Value, dict[str, str]]:
    """Clone segments ``indices`` (in order) after ``x``; returns the last copy's output (``x`` if
    none) and which model initializer each copied initializer was copied from (copy -> original).

    The copies' nodes and values are named ``<prefix>.<original name>``; their initializers too.
    """
    graph = builder.graph
    position = {node: i for i, node in enumerate(graph)}
    values = {v.name: v for v in graph.inputs} | {v.name: v for node in graph for v in node.outputs}
    copied_initializers: dict[ir.Value, ir.Value] = {}  # shared within one head: a weight used twice stays one
    for index in indices:
        segment = analysis.segments[index]
        source, target = values[segment.input], values[segment.output]
        nodes = sorted(_segment_nodes(graph, source, target, index), key=position.__getitem__)
        mapping: dict[ir.Value, ir.Value] = {source: x}
        for node in nodes:
            inputs = []
            for value in node.inputs:
                if value is None or value in mapping:
                    inputs.append(None if value is None else mapping[value])
                elif value.name in graph.initializers:
                    if value not in copied_initializers:
                        copied_initializers[value] = builder.initializer(value.name, value.const_value.numpy().copy())
                    inputs.append(copied_initializers[value])
                else:  # _segment_nodes walked every other input back to a node of the segment
                    raise AssertionError(f"internal error: {value.name!r} was not copied before its use")
            mapping.update(zip(node.outputs, _clone(builder, node, inputs).outputs))
        x = mapping[target]
    return x, {copy.name: original.name for original, copy in copied_initializers.items()}


def _segment_nodes(graph: ir.Graph, source: ir.Value, target: ir.Value, index: int) -> set[ir.Node]:
    """Every node ``target`` is computed by from ``source`` and constants."""
    nodes: set[ir.Node] = set()
    pending = [target]
    seen = {source}
    while pending:
        value = pending.pop()
        if value in seen:
            continue
        seen.add(value)
        if value.name in graph.initializers:
            continue
        producer = value.producer()
        if producer is None:
            raise LLCompileError(f"augmented aux head: segment {index} reads {value.name!r}, a graph input, not "
                                 f"only its input {source.name!r}: it cannot be copied on its own")
        if producer not in nodes:
            for attr in producer.attributes.values():
                if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
                    raise LLCompileError(f"augmented aux head: {producer.op_type} {producer.name!r} in segment "
                                         f"{index} has a subgraph; copying it is not supported")
            nodes.add(producer)
            pending.extend(v for v in producer.inputs if v is not None)
    return nodes


def _clone(builder: GraphBuilder, node: ir.Node, inputs: list[ir.Value | None]) -> ir.Node:
    attributes = [ir.Attr(a.name, a.type, a.value, ref_attr_name=a.ref_attr_name) for a in node.attributes.values()]
    name = builder.names.fresh(f"{builder.prefix}.{node.name or node.op_type}")
    clone = ir.Node(node.domain, node.op_type, inputs, attributes, overload=node.overload,
                    num_outputs=len(node.outputs), version=node.version, name=name)
    for original, new in zip(node.outputs, clone.outputs):
        new.name = builder.names.fresh(f"{builder.prefix}.{original.name}")
        new.type = original.type
        new.shape = original.shape.copy() if original.shape is not None else None
    builder.graph.append(clone)
    return clone


def _input_shape(analysis: ModelAnalysis, index: int) -> list:
    return analysis.input_shape if index == 0 else analysis.segments[index - 1].output_shape


def _per_sample(shape: list) -> list:
    return list(shape[1:])


def _check_chain(analysis: ModelAnalysis, cut: str, chosen: list[int]) -> None:
    """Each copied segment must get the per-sample shape its original input had; static shapes only."""
    current = _per_sample(next(s.output_shape for s in analysis.segments if s.output == cut))
    for index in chosen:
        expected = _per_sample(_input_shape(analysis, index))
        if not all(isinstance(d, int) for d in [*current, *expected]) or current != expected:
            raise LLCompileError(
                f"augmented aux head at {cut!r}: segment {index} expects a per-sample input of shape {expected}, "
                f"the chain of copied segments {chosen} gives it {current} (static, matching shapes are needed)")
        current = _per_sample(analysis.segments[index].output_shape)
