"""Split a plan-carrying model into the stage graphs of a Program.

Each stage is the subgraph between its input and its outputs ``[loss, output]``. A block's input
is a graph input of its stage: that is the stop-gradient between blocks, in the structure itself.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from llcompile.analysis.structure import analyze, parameter_roles, shape_list
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import IR_VERSION
from llcompile.program.plan import Plan, StagePlan
from llcompile.program.program import Program, Stage


def emit(model: ir.Model, eval_model: ir.Model, strategy: str, options: dict, source: dict) -> Program:
    """Build the Program for ``model`` (which carries a complete plan)."""
    plan = complete_plan(model)
    analysis = analyze(eval_model)
    layers_by_name = {layer.name: layer for layer in analysis.layers}
    stages = []
    for index, stage_plan in enumerate(plan.stages):
        stage_model = _extract_stage(model, stage_plan, plan.labels)
        roles = parameter_roles(ir.from_proto(stage_model).graph)
        # an ema head's averaged weights: a weight's place in the graph, but no gradient trains them
        roles.update(dict.fromkeys(stage_plan.head.ema if stage_plan.head and stage_plan.head.ema else (), "buffer"))
        node_names = {node.name for node in stage_model.graph.node}
        stages.append(Stage(
            **vars(stage_plan), graph=f"stages/{index:02d}_{stage_plan.name}.onnx", labels=plan.labels,
            params=sorted(n for n, r in roles.items() if r == "param"),
            buffers=sorted(n for n, r in roles.items() if r == "buffer"),
            layers=[name for name in layers_by_name if name in node_names], model=stage_model))
    input_value = model.graph.inputs[0]
    return Program(
        strategy=strategy, options={**options, **plan.options}, source=source,
        input={"name": input_value.name, "shape": shape_list(input_value)},
        output=plan.output, logits=plan.logits, num_classes=plan.num_classes, cuts=plan.cuts,
        stages=stages, eval_model=to_checked_proto(eval_model, "eval model"))


def complete_plan(model: ir.Model) -> Plan:
    """The plan ``model`` carries, refused unless every stage has a loss or Hebbian updates."""
    plan = Plan.read(model)
    if plan is None:
        raise LLCompileError("the planned model carries no llcompile plan: run PartitionPass and the passes after "
                             "it (AuxHeadsPass or HebbianPass, then ModelLossPass) on it first")
    missing = next((stage.name for stage in plan.stages if stage.loss is None and stage.updates is None), None)
    if missing is not None:
        raise LLCompileError(f"stage {missing} of the plan has no loss: run AuxHeadsPass and ModelLossPass first")
    return plan


def _extract_stage(model: ir.Model, stage: StagePlan, labels: str) -> onnx.ModelProto:
    if stage.updates is not None:  # forward-only: the activation and the layers' new weights
        inputs, outputs = [stage.input, stage.lr_input], [stage.output, *stage.updates.values()]
    else:
        inputs, outputs = [stage.input, labels], [stage.loss, stage.output]
    try:
        graph = ir.convenience.extract(model.graph, inputs=inputs, outputs=outputs)
    except ValueError as exc:  # a tensor from another block is needed, e.g. shape arithmetic across a cut
        raise LLCompileError(f"stage {stage.name} cannot be cut out on its own: {str(exc).splitlines()[0]}") from None
    graph.name = stage.name
    functions = [f for f in model.functions.values()
                 if any(node.domain == f.domain and node.op_type == f.name for node in graph)]
    for function in functions:
        graph.opset_imports[function.domain] = model.opset_imports[function.domain]
    stage_model = ir.Model(graph, ir_version=IR_VERSION, producer_name="llcompile", functions=functions)
    proto = to_checked_proto(stage_model, f"stage {stage.name}")
    # extract collects the initializers in an identity-keyed set, so their order (and that of their
    # value_info) changes from call to call; a fixed order makes the same input and options give the
    # same bytes: the initializers in the model's order, value_info (no meaning in its order) by name
    position = {name: index for index, name in enumerate(model.graph.initializers)}
    for entries, key in ((proto.graph.initializer, lambda tensor: position[tensor.name]),
                         (proto.graph.value_info, lambda info: info.name)):
        ordered = sorted(entries, key=key)
        del entries[:]
        entries.extend(ordered)
    return proto


def to_checked_proto(model: ir.Model, what: str) -> onnx.ModelProto:
    """Serialise and verify with the full ONNX checker (strict shape inference included)."""
    model.ir_version = IR_VERSION
    proto = ir.to_proto(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RuntimeError(f"{what} fails the ONNX checker: {str(exc).splitlines()[0]}") from exc
    return proto
