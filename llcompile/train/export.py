"""The trained inference model: the program's eval model with the trained weights, by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from llcompile.util.atomic import atomic_write
from llcompile.program.program import Program


def trained_eval_model(program: Program, state: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(program.eval_model)
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name in state:
            array = state[tensor.name].astype(numpy_helper.to_array(tensor).dtype, copy=False)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    return model


def save_trained_model(program: Program, state: dict[str, np.ndarray], path: Path) -> None:
    atomic_write(path, lambda f: f.write(trained_eval_model(program, state).SerializeToString()))
