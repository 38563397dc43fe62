"""Put every BatchNormalization in training form (trainable) or inference form."""

import onnx_ir as ir

from llcompile.errors import LLCompileError


class BatchNormModePass(ir.passes.InPlacePass):
    """Training form: ``training_mode=1`` with the running-mean/var outputs, as ORT training and
    torch's training-mode export write it. Inference form: ``training_mode=0`` and one output.

    Scale, bias, mean and variance must be initializers: they are the parameters and the
    buffers that a backend trains and updates by name.
    """

    def __init__(self, training: bool):
        super().__init__()
        self.training = training

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            if node.op_type != "BatchNormalization" or node.domain not in ("", "ai.onnx"):
                continue
            for value in node.inputs[1:5]:
                if value is None or value.const_value is None:
                    raise LLCompileError(
                        f"BatchNormalization {node.name!r}: scale, bias, mean and variance must be "
                        "constant tensors to be trained")
            modified |= self._set_mode(node)
        return ir.passes.PassResult(model, modified)

    def _set_mode(self, node: ir.Node) -> bool:
        current = node.attributes.get("training_mode")
        is_training = current is not None and current.as_int() == 1
        num_outputs = 3 if self.training else 1
        if is_training == self.training and len(node.outputs) == num_outputs:
            return False
        if not self.training and any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
            raise LLCompileError(f"BatchNormalization {node.name!r}: its running statistics are used in the graph")
        node.attributes.pop("spatial", None)  # opset < 9; version conversion usually drops it
        if self.training:
            node.attributes["training_mode"] = ir.AttrInt64("training_mode", 1)
        else:
            node.attributes.pop("training_mode", None)
        node.resize_outputs(num_outputs)
        y = node.outputs[0].name
        for out, suffix in zip(node.outputs[1:], ("running_mean", "running_var")):
            out.name = f"{y}.{suffix}"
        return True
