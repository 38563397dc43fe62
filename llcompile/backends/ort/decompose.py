"""Rewrite ops that onnxruntime-training cannot differentiate into ops that it can.

ORT's gradient builder refuses a graph with any op missing from its registry, even one that the
rest of llcompile (the torch backend, the cost model) handles, and some registered gradients
break on a symbolic batch (AveragePool). Applied only to the graphs that become ORT training
artifacts (``backends/ort/artifacts.py``); the program's own graphs keep the original ops. Each
op's rewrite is its ``ort_rewrite`` in the op registry (``llcompile/ops/``): a function from the
node to the nodes that replace it, the last of which computes the node's outputs (its first ones,
if it has more).
"""

from __future__ import annotations

import onnx_ir as ir

from llcompile.frontend.naming import NameScope
from llcompile.ops.registry import op_facts
from llcompile.frontend.pass_pipeline import LLCompilePass


class DecomposeForOrtPass(LLCompilePass):
    """Replace every standard-domain node whose op has an ORT rewrite by its decomposition."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        names = NameScope(graph)
        modified = False
        for node in list(graph):
            facts = op_facts(node.op_type, node.domain)
            if facts is None or facts.ort_rewrite is None:
                continue
            replacement = facts.ort_rewrite(node)
            _name_new_nodes(replacement, node.name or node.op_type, names)
            outputs = list(node.outputs)
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], replacement, outputs, list(replacement[-1].outputs[:len(outputs)]))
            modified = True
        return ir.passes.PassResult(model, modified)


def _name_new_nodes(nodes: list[ir.Node], base: str, names: NameScope) -> None:
    """``base.<i>.<op>`` for each node and its outputs, unused in the graph (ORT refuses a repeated
    node name). The last node's outputs then take the replaced node's output names."""
    for index, node in enumerate(nodes):
        node.name = names.fresh(f"{base}.{index}.{node.op_type}")
        for out in node.outputs:
            out.name = names.fresh(f"{node.name}.out")
