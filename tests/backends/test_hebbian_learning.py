"""The Hebbian rules learn what they are known to learn, on both backends' Hebbian stages: on zero-mean
Gaussian data with a known covariance, a linear layer (``--hebbian-activation pre``) trained by Oja's rule
converges to the covariance's first principal component, and by Sanger's rule its filters converge to the
top-k principal components in order (numpy's eigendecomposition is the reference), with unit norms."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort_hebbian import OrtHebbianStage
from llcompile.backends.torch_backend import TorchBackend
from llcompile.program import Program

DIM, CLASSES, BATCH = 6, 3, 64
EIGENVALUES = np.array([4.0, 2.5, 1.5, 0.6, 0.3, 0.1])  # gaps large enough to separate the top 3 quickly
STEPS, LR = 400, 0.02


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tensors are tiny: on two shared cores torch's thread pool costs more than it gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _covariance_basis() -> np.ndarray:
    """A fixed random orthonormal basis: the principal components are its columns, in EIGENVALUES order."""
    q, _ = np.linalg.qr(np.random.default_rng(42).standard_normal((DIM, DIM)))
    return q


def _model(filters: int) -> onnx.ModelProto:
    """x [N, DIM] -> Gemm (no bias, weight [filters, DIM]) -> Relu -> Gemm -> logits: the first segment is
    the layer that learns; its small random initial weights point nowhere in particular."""
    rng = np.random.default_rng(0)
    params = {"w": (0.1 * rng.standard_normal((filters, DIM))).astype(np.float32),
              "head_w": rng.standard_normal((CLASSES, filters)).astype(np.float32),
              "head_b": np.zeros(CLASSES, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w"], ["z"], name="layer", transB=1),
             helper.make_node("Relu", ["z"], ["h"], name="relu"),
             helper.make_node("Gemm", ["h", "head_w", "head_b"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "pca", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIM])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(v, k) for k, v in params.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _program(rule: str, filters: int, tmp_path) -> Program:
    path = tmp_path / "model.onnx"
    onnx.save(_model(filters), path)
    program = llcompile.transform(path, "local-sgd", prefix=1, hebbian_rule=rule, hebbian_activation="pre")
    return dataclasses.replace(program, stages=program.stages[:1])


def _stage(backend: str, program: Program):
    if backend == "ort":
        return OrtHebbianStage(program.stages[0]), np.asarray
    (stage,) = TorchBackend().build(program, OptimizerConfig())
    return stage, torch.from_numpy


def _learned_weight(rule: str, filters: int, backend: str, tmp_path) -> np.ndarray:
    stage, to_input = _stage(backend, _program(rule, filters, tmp_path))
    rng = np.random.default_rng(1)
    mix = _covariance_basis() * np.sqrt(EIGENVALUES)  # x = Q sqrt(L) z: covariance Q L Q^T
    labels = to_input(np.zeros(BATCH, np.int64))
    for _ in range(STEPS):
        x = (rng.standard_normal((BATCH, DIM)) @ mix.T).astype(np.float32)
        stage.train_step(to_input(x), labels, LR)
    return stage.state()["w"]


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_oja_converges_to_the_first_principal_component(backend, tmp_path):
    (w,) = _learned_weight("oja", 1, backend, tmp_path)
    first = _covariance_basis()[:, 0]
    assert abs(np.dot(w, first)) / np.linalg.norm(w) > 0.99
    assert np.linalg.norm(w) == pytest.approx(1.0, abs=0.05)  # Oja's fixed point has unit norm


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_sanger_converges_to_the_top_principal_components_in_order(backend, tmp_path):
    w = _learned_weight("sanger", 3, backend, tmp_path)
    basis = _covariance_basis()
    cosines = np.abs(w @ basis) / np.linalg.norm(w, axis=1, keepdims=True)  # [filter, component]
    np.testing.assert_allclose(np.diag(cosines), 1.0, atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=0.05)


def test_oja_filters_do_not_compete(tmp_path):
    """The reason for Sanger: three filters under Oja's rule all converge to the same first component."""
    w = _learned_weight("oja", 3, "torch", tmp_path)
    cosines = np.abs(w @ _covariance_basis()[:, 0]) / np.linalg.norm(w, axis=1)
    assert (cosines > 0.99).all()
