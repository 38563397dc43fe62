"""Make a static batch dimension symbolic, so a model exported at batch 1 trains at any batch."""

import numpy as np
import onnx_ir as ir

from llcompile.errors import ModelError
from llcompile.frontend.naming import NameScope
from llcompile.frontend.pass_pipeline import LLCompilePass

BATCH_DIM = "N"


class DynamicBatchPass(LLCompilePass):
    """Replace a static first dimension of the data input and outputs with ``N``.

    Exporters bake the batch size into Reshape targets (``[1, -1]``, ``[2, heads, T, d]``); those are
    rewritten to follow the batch at run time instead (``_unbake_reshape_target``); what this does not
    recognise, the compiler's batch check (``compiler/batch_check.py``) refuses. A learned token
    expanded to the batch (ViT's class token, ``cls.expand(n, -1, -1)``) is folded into a constant of
    the exported batch: where a Concat joins such a constant to the data, it is expanded to the data's
    batch again. Inferred shapes of
    intermediate values are dropped so that shape inference recomputes them with the symbolic batch.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        data_inputs = [v for v in graph.inputs if v.const_value is None]
        static = [v for v in data_inputs if v.shape is not None and v.shape.rank() > 0
                  and isinstance(v.shape[0], int)]
        if not static:
            return ir.passes.PassResult(model, False)
        batch = static[0].shape[0]
        exported = {value: list(value.shape) for value in [*data_inputs, *(v for n in graph for v in n.outputs)]
                    if value.shape is not None and value.shape.rank() > 0}
        for value in data_inputs + list(graph.outputs):
            if value.shape is not None and value.shape.rank() > 0 and value.shape[0] == batch:
                value.shape = ir.Shape([BATCH_DIM, *value.shape[1:]])
        rewritten_targets: dict[ir.Value, ir.Value] = {}
        for node in list(graph):
            if node.op_type == "Reshape":
                self._unbake_reshape_target(node, batch, exported.get(node.inputs[0]), rewritten_targets)
            elif node.op_type == "Concat":
                self._expand_batch_constants(node, batch)
            for out in node.outputs:
                if not out.is_graph_output():
                    out.shape = None
        return ir.passes.PassResult(model, True)

    @staticmethod
    def _unbake_reshape_target(node: ir.Node, batch: int, exported_input: list | None,
                               rewritten: dict[ir.Value, ir.Value]) -> None:
        """A constant target whose first dim is the exported batch, or a multiple of it read from an
        input whose first dim is one too (attention's ``[B * heads, T, d]`` <-> ``[B, heads, T, d]``),
        gets a first dim that follows the batch: 0 (copy the input's) or -1 where that is the same
        thing, else computed from the input's first dim at run time. Another target that merges or
        keeps neighbouring dims of the input (``[T, B, heads, d]`` -> ``[T * B, heads * d]``) has those
        dims computed from the input's at run time, wherever the batch is among them (``_segments``).
        ``exported_input``: the input's shape in the export, when it was recorded."""
        target = node.inputs[1]
        if target in rewritten:
            node.replace_input_with(1, rewritten[target])
            return
        if target is None or target.const_value is None:
            return
        dims = target.const_value.numpy()
        if dims.ndim != 1 or dims.size == 0 or dims[0] <= 0:
            return
        segments = _segments(exported_input, dims.tolist()) if (dims > 0).all() else None
        if dims[0] % batch and segments is not None and any(d % batch == 0 for d in dims):
            node.replace_input_with(1, _target_from_input_dims(node, segments, dims, batch))
            return
        if dims[0] % batch:
            return
        first, rest = int(dims[0]), dims[1:]
        exported_first = exported_input[0] if exported_input and isinstance(exported_input[0], int) else None
        allowzero = node.attributes.get_int("allowzero", 0) == 1
        copies_first = first == exported_first or (exported_first is None and first == batch)
        if copies_first and not allowzero:
            rewritten[target] = _constant_target(node, target, np.array([0, *rest], dims.dtype))  # 0: copy the dim
        elif copies_first and -1 not in rest:
            rewritten[target] = _constant_target(node, target, np.array([-1, *rest], dims.dtype))
        elif exported_first is not None and exported_first % batch == 0:
            # computed per node: the same target read from another input may scale differently
            node.replace_input_with(1, _computed_target(node, exported_first // batch, first // batch, rest))
        elif segments is not None:
            node.replace_input_with(1, _target_from_input_dims(node, segments, dims, batch))
        elif allowzero:
            raise ModelError(
                f"Reshape {node.name!r} bakes the batch size {batch} into its target {dims.tolist()} "
                "(allowzero=1, so it cannot copy the batch): re-export with a dynamic batch")

    @staticmethod
    def _expand_batch_constants(node: ir.Node, batch: int) -> None:
        """Replace a constant input of the exported batch (its rows equal) by its first row expanded
        to the batch of the Concat's first computed input."""
        data = next((v for v in node.inputs if v is not None and v.const_value is None), None)
        if data is None:
            return
        for index, value in enumerate(node.inputs):
            array = value.const_value.numpy() if value is not None and value.const_value is not None else None
            if array is None or array.ndim < 2 or node.attributes.get_int("axis", 0) % array.ndim == 0 \
                    or array.shape[0] != batch or not (array == array[:1]).all():
                continue
            graph = node.graph
            names = NameScope(graph)
            row, starts, ends, rest = (names.initializer(f"{value.name}.batch_{key}", constant) for key, constant in (
                ("row", array[:1]), ("start", np.array([0], np.int64)), ("end", np.array([1], np.int64)),
                ("rest", np.array(array.shape[1:], np.int64))))
            shape = ir.Node("", "Shape", [data])
            batch_dim = ir.Node("", "Slice", [shape.outputs[0], starts, ends])  # Shape's start/end needs opset 15
            target = ir.Node("", "Concat", [batch_dim.outputs[0], rest], attributes=[ir.AttrInt64("axis", 0)])
            expand = ir.Node("", "Expand", [row, target.outputs[0]])
            graph.insert_before(node, [shape, batch_dim, target, expand])
            node.replace_input_with(index, expand.outputs[0])


def _constant_target(node: ir.Node, target: ir.Value, dims: np.ndarray) -> ir.Value:
    """``dims`` as ``node``'s new target initializer (named after the old one); returned for reuse."""
    name = f"{target.name}.dynamic_batch"
    new_target = ir.Value(name=name, shape=ir.Shape(dims.shape), type=ir.TensorType(ir.DataType.INT64),
                          const_value=ir.tensor(dims, name=name))
    node.graph.register_initializer(new_target)
    node.replace_input_with(1, new_target)
    return new_target


def _computed_target(node: ir.Node, divide: int, multiply: int, rest: np.ndarray) -> ir.Value:
    """``[first, *rest]`` with first = the Reshape input's first dim // ``divide`` * ``multiply`` at run
    time (the input's first dim is ``divide`` x the batch; the target's, ``multiply`` x it)."""
    names = NameScope(node.graph)
    prefix = f"{node.name or 'reshape'}.dynamic_batch"

    def constant(key: str, values) -> ir.Value:
        return names.initializer(f"{prefix}.{key}", np.array(values, np.int64))

    shape = ir.Node("", "Shape", [node.inputs[0]])
    nodes = [shape, ir.Node("", "Slice", [shape.outputs[0], constant("start", [0]), constant("end", [1])])]
    for op, factor in (("Div", divide), ("Mul", multiply)):
        if factor != 1:
            nodes.append(ir.Node("", op, [nodes[-1].outputs[0], constant(op.lower(), [factor])]))
    nodes.append(ir.Node("", "Concat", [nodes[-1].outputs[0], constant("rest", rest)],
                         attributes=[ir.AttrInt64("axis", 0)]))
    node.graph.insert_before(node, nodes)
    return nodes[-1].outputs[0]


def _segments(exported_input: list | None, target: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """The target as runs of neighbouring input axes and target dims with equal products (the input's
    exported shape), each as small as possible: ``[65, 2, 144] -> [65, 2, 3, 48]`` is
    ``([0], [0]), ([1], [1]), ([2], [2, 3])``; None when the shapes do not line up that way."""
    if not exported_input or not all(isinstance(d, int) and d > 0 for d in exported_input):
        return None
    segments, axis, index = [], 0, 0
    while axis < len(exported_input) and index < len(target):
        axes, dims = [axis], [index]
        left, right = exported_input[axis], target[index]
        axis, index = axis + 1, index + 1
        while left != right:
            if left < right and axis < len(exported_input):
                left *= exported_input[axis]
                axes.append(axis)
                axis += 1
            elif right < left and index < len(target):
                right *= target[index]
                dims.append(index)
                index += 1
            else:
                return None
        segments.append((axes, dims))
    leftover = exported_input[axis:] + target[index:]
    if any(d != 1 for d in leftover) or (axis < len(exported_input) and index < len(target)):
        return None
    if index < len(target):  # trailing size-1 target dims: constants of their own
        segments.extend(([], [i]) for i in range(index, len(target)))
    elif axis < len(exported_input) and segments:  # trailing size-1 input axes join the last run
        segments[-1][0].extend(range(axis, len(exported_input)))
    return segments


def _target_from_input_dims(node: ir.Node, segments: list[tuple[list[int], list[int]]],
                            target: np.ndarray, batch: int) -> ir.Value:
    """The target computed at run time: in each run, one target dim (the carrier: the one of the
    exported batch size, else the first) is the product of the run's input dims at run time divided
    by the run's other target dims, which keep their exported sizes."""
    names = NameScope(node.graph)
    prefix = f"{node.name or 'reshape'}.dynamic_batch"
    shape = ir.Node("", "Shape", [node.inputs[0]])
    nodes, dims, axes = [shape], [], {}

    def axis_dim(axis: int) -> ir.Value:
        if axis not in axes:
            start = names.initializer(f"{prefix}.axis{axis}", np.array([axis], np.int64))
            end = names.initializer(f"{prefix}.axis{axis}_end", np.array([axis + 1], np.int64))
            nodes.append(ir.Node("", "Slice", [shape.outputs[0], start, end]))
            axes[axis] = nodes[-1].outputs[0]
        return axes[axis]

    for run, indices in segments:
        if not run:
            dims.append(names.initializer(f"{prefix}.dims{indices[0]}", target[indices].astype(np.int64)))
            continue
        dim = axis_dim(run[0])
        for axis in run[1:]:
            nodes.append(ir.Node("", "Mul", [dim, axis_dim(axis)]))
            dim = nodes[-1].outputs[0]
        carrier = next((i for i in indices if target[i] == batch), indices[0])
        others = int(np.prod([target[i] for i in indices if i != carrier]))
        if others != 1:  # the run's other target dims keep their sizes; the carrier takes what is left
            divisor = names.initializer(f"{prefix}.others{carrier}", np.array([others], np.int64))
            nodes.append(ir.Node("", "Div", [dim, divisor]))
            dim = nodes[-1].outputs[0]
        dims.extend(dim if i == carrier else names.initializer(f"{prefix}.dim{i}", target[i:i + 1].astype(np.int64))
                    for i in indices)
    nodes.append(ir.Node("", "Concat", dims, attributes=[ir.AttrInt64("axis", 0)]))
    node.graph.insert_before(node, nodes)
    return nodes[-1].outputs[0]
