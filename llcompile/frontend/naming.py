"""Fresh names for what llcompile adds to a user's graph, never colliding with the user's own."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


class NameScope:
    """Every value, initializer and node name in ``graph``; ``fresh`` hands out unused ones."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.taken: set[str] = set(graph.initializers)
        self.taken.update(v.name for v in graph.inputs)
        for node in graph:
            self.taken.add(node.name or "")
            self.taken.update(v.name for v in node.outputs)

    def fresh(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.taken.add(name)
        return name

    def initializer(self, base: str, array: np.ndarray) -> ir.Value:
        """``array`` registered as an initializer of the graph under a fresh name made from ``base``."""
        name = self.fresh(base)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                         const_value=ir.tensor(array, name=name))
        self.graph.register_initializer(value)
        return value
