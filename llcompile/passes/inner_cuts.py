"""Cut points inside residual units (``--inner-cuts``): the skip and the branch cross a block
boundary joined into one tensor.

Inside a residual unit two tensors are live at once (the unit's input, waiting on the skip path,
and the branch's activation), so no single tensor dominates the output there and a block can only
end at a unit's output. Concatenating the two along the channel axis and splitting them again
right after makes the concatenation a dominator: a cut point between the unit's convolutions,
with the same computation on either side. A block ending there hands over both tensors (its aux
head reads them joined), which lets a partition balance at a finer grain than whole units.

``JoinInnerCutsPass`` adds a join before every parametric op where exactly two feature maps of
the same batch and spatial size are live; ``DropUnusedInnerCutsPass``, after the partition, takes
out the joins that did not become a block boundary.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.analysis.structure import data_dependent_nodes, data_input, is_parametric
from llcompile.frontend.naming import NameScope
from llcompile.program.plan import require_plan
from llcompile.frontend.pass_pipeline import LLCompilePass

INNER_CUT_KEY = "llcompile.inner_cut"
INNER_CUT_PREFIX = "inner_cut."  # the joined tensor of the inner cut before layer L is "inner_cut.L"


def _descendants(node: ir.Node) -> set[ir.Node]:
    """``node`` and every node that reads what it computes, directly or not."""
    found, todo = {node}, [node]
    while todo:
        for out in todo.pop().outputs:
            for user, _ in out.uses():
                if user not in found:
                    found.add(user)
                    todo.append(user)
    return found


def _crossing(nodes: list[ir.Node], after: set[ir.Node], source: ir.Value) -> list[ir.Value]:
    """The data values computed outside ``after`` (or the data input) that a node of ``after``
    reads, or that are a graph output."""
    produced = [source, *(out for node in nodes if node not in after for out in node.outputs)]
    return [v for v in produced if v.is_graph_output() or any(user in after for user, _ in v.uses())]


def _joinable(a: ir.Value, b: ir.Value) -> bool:
    """Two float feature maps [N, C, H, W] alike but for their (static) channel counts."""
    if a.shape is None or b.shape is None or a.dtype != b.dtype or a.dtype != ir.DataType.FLOAT:
        return False
    if a.shape.rank() != 4 or b.shape.rank() != 4:
        return False
    dims_a, dims_b = list(a.shape), list(b.shape)
    return (isinstance(dims_a[1], int) and isinstance(dims_b[1], int)
            and dims_a[0] == dims_b[0] and dims_a[2:] == dims_b[2:])


class JoinInnerCutsPass(LLCompilePass):
    """Before each parametric op with exactly two joinable feature maps live (a residual unit's
    skip and branch), ``inner_cut.<op> = Concat(skip, branch)`` and a Split back into the two,
    which every later reader then reads. Both nodes carry the metadata ``llcompile.inner_cut``."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameScope(graph)
        source = data_input(graph)
        nodes = data_dependent_nodes(graph)
        sites = []
        for node in nodes:
            if not is_parametric(node):
                continue
            after = _descendants(node)
            live = _crossing(nodes, after, source)
            if len(live) == 2 and _joinable(*live):
                sites.append((node, live))
        renamed: dict[ir.Value, ir.Value] = {}  # a join's input -> its Split output, for the joins after it
        for node, live in sites:
            after = _descendants(node)
            # what does not depend on this op goes before the cut (a projection shortcut computed later in
            # graph order, say): only then is what crosses the cut the two tensors that meet after it
            position = {n: i for i, n in enumerate(graph)}
            for moved in [n for n in graph if n not in after and position[n] > position[node]]:
                graph.remove(moved)
                graph.insert_before(node, moved)
            live = [renamed.get(v, v) for v in live]
            parts = self._join(graph, names, node, live, after)
            renamed.update({old: new for old, new in zip(live, parts)})
        return ir.passes.PassResult(model, bool(sites))

    @staticmethod
    def _join(graph: ir.Graph, names: NameScope, before: ir.Node, live: list[ir.Value],
              readers: set[ir.Node]) -> list[ir.Value]:
        """Join ``live`` right before ``before`` and make ``readers`` read the split parts instead."""
        joined_name = names.fresh(INNER_CUT_PREFIX + (before.name or before.op_type))
        channels = [v.shape[1] for v in live]
        sizes = names.initializer(f"{joined_name}.sizes", np.array(channels, dtype=np.int64))
        concat = ir.Node("", "Concat", live, attributes=[ir.AttrInt64("axis", 1)], name=names.fresh(joined_name))
        joined = concat.outputs[0]
        joined.name = joined_name
        joined.dtype = live[0].dtype
        joined.shape = ir.Shape([live[0].shape[0], sum(channels), *list(live[0].shape)[2:]])
        split = ir.Node("", "Split", [joined, sizes], attributes=[ir.AttrInt64("axis", 1)], num_outputs=2,
                        name=names.fresh(f"{joined_name}.split"))
        for part, value in zip(split.outputs, live):
            part.name = names.fresh(f"{value.name}.after_{joined_name}")
            part.dtype, part.shape = value.dtype, value.shape
        for node in (concat, split):
            node.metadata_props[INNER_CUT_KEY] = "1"
        graph.insert_before(before, [concat, split])
        for value, part in zip(live, split.outputs):
            for user, index in list(value.uses()):
                if user in readers:
                    user.replace_input_with(index, part)
        return list(split.outputs)


class DropUnusedInnerCutsPass(LLCompilePass):
    """Take out every inner-cut join whose joined tensor is not a cut of the plan (its readers read
    the two tensors again), so that only the chosen boundaries pay for the Concat and Split."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        cuts = set(require_plan(model, "DropUnusedInnerCutsPass").cuts)
        unused = [node for node in model.graph
                  if node.op_type == "Concat" and INNER_CUT_KEY in node.metadata_props
                  and node.outputs[0].name not in cuts]
        for concat in unused:
            split = next(user for user, _ in concat.outputs[0].uses())
            sizes = split.inputs[1]
            ir.convenience.replace_all_uses_with(list(split.outputs), list(concat.inputs))
            model.graph.remove([split, concat], safe=True)
            del model.graph.initializers[sizes.name]
        return ir.passes.PassResult(model, bool(unused))
