"""Evaluate nodes whose inputs are all constants and store their results as initializers.

Exporters and tools compute weights in the graph (``ConstantOfShape``, ``Transpose(W)``,
``Cast(W)``, ``Unsqueeze(scale)``); a trainable parameter must be a named initializer. Nodes are
evaluated with onnx's reference implementation, so every standard op is covered.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from llcompile.errors import ModelError
from llcompile.frontend.pass_pipeline import LLCompilePass


class FoldConstantsPass(LLCompilePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for node in list(graph):
            if not node.inputs or not all(v is None or v.const_value is not None for v in node.inputs):
                continue
            if any(out.is_graph_output() for out in node.outputs):
                continue
            results = self._evaluate(node)
            for out, array in zip(node.outputs, results):
                name = out.name
                folded = ir.Value(name=name, shape=ir.Shape(array.shape),
                                  type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                                  const_value=ir.tensor(array, name=name))
                out.replace_all_uses_with(folded)
                out.name = f"{name}.folded"
                graph.register_initializer(folded)
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)

    @staticmethod
    def _evaluate(node: ir.Node):
        proto = ir.serde.serialize_node(node)
        feeds = {v.name: v.const_value.numpy() for v in node.inputs if v is not None}
        try:
            return ReferenceEvaluator(proto).run(None, feeds)
        except Exception as exc:  # the reference evaluator raises per-op exception types
            raise ModelError(
                f"cannot evaluate constant node {node.name!r} ({node.op_type}): {str(exc).splitlines()[0]}") from None
