"""Train the last block with the model's own loss: softmax cross-entropy on its logits."""

from __future__ import annotations

import onnx_ir as ir

from llcompile.frontend.graph_builder import GraphBuilder, add_cross_entropy, labels_input, value_named
from llcompile.program.plan import require_plan
from llcompile.frontend.pass_pipeline import LLCompilePass

MODEL_LOSS = "loss"


class ModelLossPass(LLCompilePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan = require_plan(model, type(self).__name__)
        final = plan.stages[-1]
        if final.loss is not None:
            return ir.passes.PassResult(model, False)
        graph = model.graph
        logits = value_named(graph, plan.logits)
        if logits.shape is not None and logits.shape.rank() > 2:  # [N, C, 1, 1] from a 1x1-conv classifier
            logits = GraphBuilder(graph, "model_loss").op("Flatten", [logits], "logits", axis=1)
        final.loss = add_cross_entropy(graph, logits, labels_input(graph, plan.labels), MODEL_LOSS).name
        plan.write(model)
        return ir.passes.PassResult(model, True)
