"""Put the ops that behave differently in training (BatchNormalization, Dropout) in training
form or in inference form."""

import numpy as np
import onnx
import onnx_ir as ir

from llcompile.errors import ModelError
from llcompile.frontend.naming import NameScope
from llcompile.frontend.pass_pipeline import LLCompilePass


class TrainingModePass(LLCompilePass):
    """Training form: BatchNormalization with ``training_mode=1`` and its running-mean/var
    outputs, as ORT training and torch's training-mode export write it; Dropout with a
    ``training_mode`` input of True. Inference form: BatchNormalization with one output and no
    ``training_mode``; Dropout without the ``training_mode`` input (the identity).

    Scale, bias, mean and variance must be initializers: they are the parameters and the
    buffers that a backend trains and updates by name.
    """

    def __init__(self, training: bool):
        super().__init__()
        self.training = training

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        names = NameScope(model.graph)
        true_flag: ir.Value | None = None
        dropout_has_mode_input = model.opset_imports.get("", 0) >= 12
        for node in model.graph:
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "BatchNormalization":
                for value in node.inputs[1:5]:
                    if value is None or value.const_value is None:
                        raise ModelError(
                            f"BatchNormalization {node.name!r}: scale, bias, mean and variance must be "
                            "constant tensors to be trained")
                modified |= self._set_batchnorm_mode(node, names)
            elif node.op_type == "Dropout" and dropout_has_mode_input:  # before opset 12: inference only
                if self.training and true_flag is None:
                    true_flag = _register_true_flag(model.graph, names)
                modified |= self._set_dropout_mode(node, true_flag)
        return ir.passes.PassResult(model, modified)

    def _set_batchnorm_mode(self, node: ir.Node, names: NameScope) -> bool:
        current = node.attributes.get("training_mode")
        is_training = current is not None and current.as_int() == 1
        num_outputs = 3 if self.training else 1
        if is_training == self.training and len(node.outputs) == num_outputs:
            return False
        if not self.training and any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
            raise ModelError(f"BatchNormalization {node.name!r}: its running statistics are used in the graph")
        node.attributes.pop("spatial", None)  # opset < 9; version conversion usually drops it
        if self.training:
            node.attributes["training_mode"] = ir.AttrInt64("training_mode", 1)
        else:
            node.attributes.pop("training_mode", None)
        node.resize_outputs(num_outputs)
        y = node.outputs[0].name
        for out, suffix in zip(node.outputs[1:], ("running_mean", "running_var")):
            if not out.name:
                out.name = names.fresh(f"{y}.{suffix}")
        return True

    def _set_dropout_mode(self, node: ir.Node, true_flag: ir.Value | None) -> bool:
        flag = node.inputs[2] if len(node.inputs) > 2 else None
        if not self.training:
            if flag is None:
                return False
            node.resize_inputs(2)
            return True
        if flag is not None and flag.const_value is not None and bool(flag.const_value.numpy()):
            return False
        if len(node.inputs) < 3:
            node.resize_inputs(3)
        node.replace_input_with(2, true_flag)
        return True


def _register_true_flag(graph: ir.Graph, names: NameScope) -> ir.Value:
    name = names.fresh("dropout.training_mode")
    value = ir.Value(name=name, shape=ir.Shape([]), type=ir.TensorType(ir.DataType.BOOL),
                     const_value=ir.tensor(np.array(True), name=name))
    graph.register_initializer(value)
    return value


def with_training_mode(model: onnx.ModelProto, training: bool) -> onnx.ModelProto:
    """``model`` with every BatchNormalization (and Dropout) in training or inference form."""
    ir_model = ir.from_proto(model)
    TrainingModePass(training=training)(ir_model)
    return ir.to_proto(ir_model)
