"""Make a static batch dimension symbolic, so a model exported at batch 1 trains at any batch."""

import numpy as np
import onnx_ir as ir

from llcompile.errors import LLCompileError
from llcompile.frontend.naming import NameScope

BATCH_DIM = "N"


class DynamicBatchPass(ir.passes.InPlacePass):
    """Replace a static first dimension of the data input and outputs with ``N``.

    Old exporters bake the batch size into Reshape targets (``[1, -1]``); those are rewritten to
    copy the batch dimension instead. A learned token expanded to the batch (ViT's class token,
    ``cls.expand(n, -1, -1)``) is folded into a constant of the exported batch: where a Concat joins
    such a constant to the data, it is expanded to the data's batch again. Inferred shapes of
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
        for value in data_inputs + list(graph.outputs):
            if value.shape is not None and value.shape.rank() > 0 and value.shape[0] == batch:
                value.shape = ir.Shape([BATCH_DIM, *value.shape[1:]])
        rewritten_targets: dict[ir.Value, ir.Value] = {}
        for node in graph:
            if node.op_type == "Reshape":
                self._unbake_reshape_target(node, batch, rewritten_targets)
            elif node.op_type == "Concat":
                self._expand_batch_constants(node, batch)
            for out in node.outputs:
                if not out.is_graph_output():
                    out.shape = None
        return ir.passes.PassResult(model, True)

    @staticmethod
    def _unbake_reshape_target(node: ir.Node, batch: int, rewritten: dict[ir.Value, ir.Value]) -> None:
        target = node.inputs[1]
        if target in rewritten:
            node.replace_input_with(1, rewritten[target])
            return
        if target is None or target.const_value is None:
            return
        dims = target.const_value.numpy()
        if dims.ndim != 1 or dims.size == 0 or dims[0] != batch:
            return
        allowzero = node.attributes.get("allowzero")
        if allowzero is not None and allowzero.as_int() == 1:
            if -1 in dims[1:]:
                raise LLCompileError(
                    f"Reshape {node.name!r} bakes the batch size {batch} into its target {dims.tolist()} "
                    "(allowzero=1, so it cannot copy the batch): re-export with a dynamic batch")
            new_first = -1
        else:
            new_first = 0  # 0 copies the input's dimension
        new_dims = np.array([new_first, *dims[1:]], dtype=dims.dtype)
        name = f"{target.name}.dynamic_batch"
        new_target = ir.Value(name=name, shape=ir.Shape(new_dims.shape), type=ir.TensorType(ir.DataType.INT64),
                              const_value=ir.tensor(new_dims, name=name))
        node.graph.register_initializer(new_target)
        node.replace_input_with(1, new_target)
        rewritten[target] = new_target

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
