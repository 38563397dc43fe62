"""Rewrite the layers of the plan's Hebbian prefix into forward-only localized updates.

For every parametric layer in the ``hebbian`` stage the pass adds one ``ai.llcompile::HebbianUpdate``
node computing the layer's new weight from its input ``x``, its activation ``y`` and the stage's
learning-rate input; the stage then outputs its activation and the new weights (no loss, no
backward pass). Gemm and MatMul layers are viewed as convolutions over a length-1 axis, so one
function serves every layer kind.
"""

from __future__ import annotations

import onnx_ir as ir

from llcompile.analysis.structure import analyze
from llcompile.errors import LLCompileError
from llcompile.frontend.naming import NameScope
from llcompile.ops import hebbian as hebbian_op
from llcompile.passes import hebbian_function
from llcompile.frontend.graph_builder import GraphBuilder, subsample_batch
from llcompile.program.plan import StageKind, require_plan
from llcompile.frontend.pass_pipeline import LLCompilePass
from llcompile.util.option_names import option_name

ACTIVATIONS = {
    "pre": "the layer's own output (before normalisation and nonlinearity)",
    "post": "after the BatchNormalization and activation that directly follow the layer (a residual Add "
            "or any other op ends the chain)",
}
# ops a "post" activation passes through (the first nonlinearity ends it)
_NORMALISATIONS = {"BatchNormalization"}
_NONLINEARITIES = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
                   "PRelu", "Softplus"}
LR_INPUT = "hebbian_lr"


class HebbianPass(LLCompilePass):
    """Add the HebbianUpdate of every layer in the plan's ``hebbian`` stage (if there is one)."""

    def __init__(self, rule: str = "oja", activation: str = "post", subsample: int = 1):
        super().__init__()
        if rule not in hebbian_function.RULES:
            raise LLCompileError(f"unknown Hebbian rule {rule!r}; choose one of: {', '.join(hebbian_function.RULES)}")
        if activation not in ACTIVATIONS:
            raise LLCompileError(f"unknown Hebbian activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if subsample < 1:
            raise LLCompileError(f"{option_name('hebbian_subsample')} must be >= 1")
        self.rule = rule
        self.activation = activation
        self.subsample = subsample  # the update reads every subsample-th sample of the batch

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan = require_plan(model, type(self).__name__)
        stage = plan.stages[0]
        if stage.updates is not None:  # already rewritten
            return ir.passes.PassResult(model, False)
        if stage.kind != StageKind.HEBBIAN:
            # the rule is the strategy's even while the prefix is empty: the options stay the same
            # whichever prefix the runtime re-emits the program with
            if all(plan.options.get(k) == v for k, v in self._options().items()):
                return ir.passes.PassResult(model, False)
            plan.options.update(self._options())
            plan.write(model)
            return ir.passes.PassResult(model, True)
        graph = model.graph
        prefix = plan.options["prefix"]
        analysis = analyze(model)
        nodes = {node.name: node for node in graph}
        lr = ir.Value(name=NameScope(graph).fresh(LR_INPUT), shape=ir.Shape([]), type=ir.TensorType(ir.DataType.FLOAT))
        graph.inputs.append(lr)
        opset = model.opset_imports[""]
        model.opset_imports[hebbian_function.DOMAIN] = hebbian_op.DOMAIN_VERSION
        function = hebbian_function.function(opset)
        model.functions[function.identifier()] = function
        stage.updates = {}
        for layer in analysis.layers:
            if layer.segment >= prefix:
                continue
            node = nodes[layer.name]
            builder = GraphBuilder(graph, f"{layer.name}.hebbian")
            new_weight = self._update(builder, node, self._activation(node), lr)
            stage.updates[layer.weight] = new_weight.name
        stage.lr_input = lr.name
        plan.options.update(self._options())
        plan.write(model)
        return ir.passes.PassResult(model, True)

    def _options(self) -> dict:
        return {"hebbian_rule": self.rule, "hebbian_activation": self.activation, "hebbian_subsample": self.subsample}

    def _activation(self, node: ir.Node) -> ir.Value:
        y = node.outputs[0]
        if self.activation == "pre":
            return y
        while len(y.uses()) == 1 and not y.is_graph_output():
            consumer = y.uses()[0].node
            if consumer.op_type not in _NORMALISATIONS | _NONLINEARITIES or consumer.inputs[0] is not y:
                break
            y = consumer.outputs[0]
            if consumer.op_type in _NONLINEARITIES:
                break
        return y

    def _update(self, b: GraphBuilder, node: ir.Node, y: ir.Value, lr: ir.Value) -> ir.Value:
        x, weight = node.inputs[0], node.inputs[1]
        rule = hebbian_function.RULES[self.rule]
        if self.subsample > 1:  # the update's MACs / subsample
            x, y = subsample_batch(b, {"x_subsample": x, "y_subsample": y}, self.subsample)
        if node.op_type == "Conv":
            return self._hebbian(b, [x, y, weight, lr], "weight", **_conv_attributes(node, x, weight), **rule)
        # Gemm / MatMul: W_new[M, K] = update of a length-1 convolution over [N, K, 1] -> [N, M, 1]
        a = node.attributes
        if node.op_type == "Gemm" and a.get_int("transA", 0):
            raise LLCompileError(f"Gemm {node.name!r} with transA=1 cannot be localized")
        rows_first = node.op_type == "Gemm" and a.get_int("transB", 0) == 1  # weight stored [M, K]
        m, k = weight.shape if rows_first else weight.shape[::-1]

        def typed(value: ir.Value, shape: list | None) -> ir.Value:
            # the new weight is a stage output: it (and what leads to it) needs a type for the checker
            value.type, value.shape = weight.type, ir.Shape(shape) if shape is not None else None
            return value

        conv_weight = weight if rows_first else typed(b.op("Transpose", [weight], "weight_t", perm=[1, 0]), [m, k])
        conv_weight = typed(b.op("Reshape", [conv_weight, b.int64s("w_shape", [m, k, 1])], "conv_weight"), [m, k, 1])
        conv_x = typed(b.op("Reshape", [x, b.int64s("x_shape", [-1, k, 1])], "conv_x"), None)
        conv_y = typed(b.op("Reshape", [y, b.int64s("y_shape", [-1, m, 1])], "conv_y"), None)
        new = self._hebbian(b, [conv_x, conv_y, conv_weight, lr], "conv_weight_new", strides=[1], pads=[0, 0],
                            dilations=[1], group=1, **rule)
        new = typed(b.op("Reshape", [new, b.int64s("new_shape", [m, k])], "rows" if not rows_first else "weight"),
                    [m, k])
        return new if rows_first else typed(b.op("Transpose", [new], "weight", perm=[1, 0]), [k, m])

    @staticmethod
    def _hebbian(b: GraphBuilder, inputs: list[ir.Value], output: str, **attributes) -> ir.Value:
        name = b.names.fresh(f"{b.prefix}.{output}")
        node = ir.Node(hebbian_function.DOMAIN, hebbian_function.OP_TYPE, inputs,
                       attributes=ir.convenience.convert_attributes(attributes), name=name)
        node.outputs[0].name = name
        weight = inputs[2]
        node.outputs[0].shape, node.outputs[0].type = weight.shape, weight.type
        b.graph.append(node)
        return node.outputs[0]


def _conv_attributes(node: ir.Node, x: ir.Value, weight: ir.Value) -> dict:
    """strides, explicit pads (auto_pad resolved from the static input shape), dilations, group."""
    kernel = list(weight.shape[2:])
    dims = len(kernel)
    a = node.attributes
    strides = list(a.get_ints("strides", [1] * dims))
    dilations = list(a.get_ints("dilations", [1] * dims))
    auto_pad = a.get_string("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(a.get_ints("pads", [0] * 2 * dims)) if auto_pad == "NOTSET" else [0] * 2 * dims
    else:
        spatial = list(x.shape)[2:] if x.shape is not None else []
        if len(spatial) != dims or not all(isinstance(d, int) for d in spatial):
            raise LLCompileError(f"Conv {node.name!r}: auto_pad={auto_pad} needs static spatial input dimensions "
                                 "to be localized")
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    return {"strides": strides, "pads": pads, "dilations": dilations, "group": a.get_int("group", 1)}
