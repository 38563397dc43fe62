"""Nets with PRelu, Elu, Softplus, LRN or Sum train on onnxruntime-training as on torch.

ORT 1.19.2 has no gradient for these ops; ``backends/ort/decompose.py`` rewrites them in the
stage graphs that become ORT training artifacts.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.backend import OrtBackend
from llcompile.backends.torch.backend import TorchBackend
from llcompile.frontend.importer import canonicalize
from tests.backends.chain import train_chain
from tests.fixtures.legacy_models import activation_cnn, legacy_caffe_style

BATCH = 8
SGD = OptimizerConfig(name="sgd", momentum=0.9)
OPS = {"prelu": ("PRelu", {}), "elu": ("Elu", {"alpha": 0.5}), "softplus": ("Softplus", {}),
       "lrn": ("LRN", {"size": 5, "alpha": 1e-2, "beta": 0.75, "bias": 1.0})}
PROGRAMS = {"bp": dict(strategy="bp"), "dbl-2": dict(strategy="dbl", blocks=2)}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return OrtBackend(cache_dir=tmp_path_factory.mktemp("ort-artifacts"))


def _caffe_net_without_dropout() -> onnx.ModelProto:
    """The Model-Zoo-era Caffe net (LRN, and Sum joining two branches) with its Dropout made an
    Identity: dropout's random masks differ between the backends."""
    model = legacy_caffe_style()
    for node in model.graph.node:
        if node.op_type == "Dropout":
            node.op_type = "Identity"
            del node.attribute[:], node.output[1:]
    return model


@pytest.mark.parametrize("kind", list(PROGRAMS))
@pytest.mark.parametrize("name", [*OPS, "caffe-net"])
def test_steps_match_the_torch_backend(backend, name, kind):
    """Per-stage losses of three SGD steps, both backends from the same program, weights and batches;
    the stages train the same parameters (PRelu's slope among them, LRN's constant band not)."""
    model = _caffe_net_without_dropout() if name == "caffe-net" else activation_cnn(OPS[name][0], **OPS[name][1])
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    program = llcompile.transform(canonicalize(model), **PROGRAMS[kind])
    torch_backend = TorchBackend(device="cpu", mode="eager")
    ort_stages, torch_stages = backend.build(program, SGD), torch_backend.build(program, SGD)
    ort_losses, torch_losses = [], []
    for step in range(3):
        rng = np.random.default_rng(step)
        x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
        labels = rng.integers(0, 10, BATCH).astype(np.int64)
        ort_losses.append(train_chain(ort_stages, x, labels, 0.05))
        torch_losses.append(train_chain(torch_stages, *torch_backend.to_batch(x, labels), 0.05))
    np.testing.assert_allclose(ort_losses, torch_losses, rtol=1e-4)
    trained = set().union(*(stage.gradients() for stage in ort_stages))
    assert trained == set().union(*(stage.params for stage in program.stages))
    assert ("act.slope" in trained) == (name == "prelu")
    for ort_stage, torch_stage in zip(ort_stages, torch_stages, strict=True):
        assert set(ort_stage.state()) == set(torch_stage.state())


def test_the_caffe_net_with_dropout_trains(backend):
    """Its training-mode Dropout (ratio 0.5) needs its mask output for ORT's gradient. The masks are
    random, so: the loss on one fixed batch falls over ten steps, and every parameter moves."""
    program = llcompile.transform(canonicalize(legacy_caffe_style()), strategy="bp")
    (stage,) = backend.build(program, SGD)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, BATCH).astype(np.int64)
    before = stage.state()
    losses = [stage.train_step(x, labels, 0.05).loss for _ in range(10)]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0]  # seen: 3.5 -> 1.5 to 1.6
    after = stage.state()
    assert all(not np.array_equal(before[name], after[name]) for name in program.stages[0].params)
