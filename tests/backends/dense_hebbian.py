"""A one-layer Hebbian prefix on vectors, built by both backends: ``x [N, dim] -> Gemm (no bias) ->
[BatchNormalization] -> Relu -> Gemm -> logits``, compiled with ``local-sgd`` and a 1-segment prefix."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.backends.base import OptimizerConfig, TrainableStage
from llcompile.backends.ort.hebbian import OrtHebbianStage
from llcompile.backends.torch.backend import TorchBackend
from llcompile.program.program import Program

CLASSES = 3
BACKENDS = ("torch", "ort")


def dense_model(dim: int, filters: int, bn: bool = False) -> onnx.ModelProto:
    """The layer's weight ``w`` is ``[filters, dim]``, small and random: it points nowhere in particular."""
    rng = np.random.default_rng(0)
    params = {"w": (0.1 * rng.standard_normal((filters, dim))).astype(np.float32),
              "head_w": rng.standard_normal((CLASSES, filters)).astype(np.float32),
              "head_b": np.zeros(CLASSES, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w"], ["z"], name="layer", transB=1)]
    h = "z"
    if bn:
        params.update(gamma=np.ones(filters, np.float32), beta=np.zeros(filters, np.float32),
                      mean=np.zeros(filters, np.float32), var=np.ones(filters, np.float32))
        nodes.append(helper.make_node("BatchNormalization", ["z", "gamma", "beta", "mean", "var"], ["bn"], name="bn"))
        h = "bn"
    nodes += [helper.make_node("Relu", [h], ["h"], name="relu"),
              helper.make_node("Gemm", ["h", "head_w", "head_b"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(v, k) for k, v in params.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def dense_program(tmp_path: Path, dim: int, filters: int, bn: bool = False, **options) -> Program:
    """The whole program (Hebbian stage first) of ``dense_model`` under local-sgd with a 1-segment prefix."""
    path = tmp_path / "model.onnx"
    onnx.save(dense_model(dim, filters, bn), path)
    return llcompile.transform(path, "local-sgd", prefix=1, **options)


def hebbian_stage(backend: str, program: Program) -> tuple[TrainableStage, Callable]:
    """The program's Hebbian stage built by ``backend``, and the function that makes its input arrays."""
    if backend == "ort":
        return OrtHebbianStage(program.stages[0]), np.asarray
    (stage,) = TorchBackend().build(dataclasses.replace(program, stages=program.stages[:1]), OptimizerConfig())
    return stage, torch.from_numpy


def as_numpy(value) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
