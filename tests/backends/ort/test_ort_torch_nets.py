"""MobileNetV3-small-like and ResNet-D-like torch exports train on onnxruntime-training as on torch.

Both failed before: MobileNetV3's HardSigmoid/HardSwish have no ORT gradient, and ResNet-D's
AvgPool shortcut broke ORT's AveragePool gradient kernel ("Sum node 'AccumulateGrad_...' ... Can
broadcast 0 by 0 or 1"). They are rewritten for ORT by ``backends/ort/decompose.py``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.backend import OrtBackend
from llcompile.backends.torch.backend import TorchBackend
from tests.backends.chain import train_chain
from tests.fixtures.torch_nets import INPUT_SHAPE, NETS, build_net, export_net

BATCH = 8
SGD = OptimizerConfig(name="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4)
PROGRAMS = {"bp": dict(strategy="bp"), "dbl-2": dict(strategy="dbl", blocks=2)}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return OrtBackend(cache_dir=tmp_path_factory.mktemp("ort-artifacts"))


@pytest.fixture(scope="module")
def net_path(build_once):
    return lambda name, mode="training": build_once(f"torch_net_{name}_{mode}.onnx",
                                                    lambda path: export_net(name, path, mode))


def batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, *INPUT_SHAPE)).astype(np.float32),
            rng.integers(0, 10, BATCH).astype(np.int64))


@pytest.mark.parametrize("name", NETS)
def test_ort_gradients_match_torch_autograd_on_the_module(backend, net_path, name):
    program = llcompile.transform(net_path(name), strategy="bp")
    (stage,) = backend.build(program, SGD)
    x, labels = batch(0)
    loss = stage.train_step(x, labels, lr=0.1).loss

    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
               for t in onnx.load(net_path(name)).graph.initializer}
    module = build_net(name)
    missing, unexpected = module.load_state_dict(weights, strict=False)
    assert not unexpected and all(n.endswith("num_batches_tracked") for n in missing)
    torch_loss = torch.nn.functional.cross_entropy(module.train()(torch.from_numpy(x)), torch.from_numpy(labels))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    torch_params = dict(module.named_parameters())
    gradients = stage.gradients()
    assert set(gradients) == set(torch_params)
    for param, grad in gradients.items():
        np.testing.assert_allclose(grad, torch_params[param].grad.numpy(), rtol=1e-3, atol=1e-5, err_msg=param)


@pytest.mark.parametrize("kind", list(PROGRAMS))
@pytest.mark.parametrize("mode", ["training", "dynamo"])  # dynamo: 3-8 s a net, most of it the export
@pytest.mark.parametrize("name", NETS)
def test_steps_match_the_torch_backend(backend, net_path, name, mode, kind):
    """Per-stage losses of five SGD steps, both backends from the same program, weights and batches."""
    program = llcompile.transform(net_path(name, mode), **PROGRAMS[kind])
    torch_backend = TorchBackend(device="cpu", mode="eager")
    ort_stages, torch_stages = backend.build(program, SGD), torch_backend.build(program, SGD)
    ort_losses, torch_losses = [], []
    for step in range(5):
        x, labels = batch(step)
        ort_losses.append(train_chain(ort_stages, x, labels, 0.05))
        torch_losses.append(train_chain(torch_stages, *torch_backend.to_batch(x, labels), 0.05))
    assert np.all(np.isfinite(ort_losses))
    np.testing.assert_allclose(ort_losses, torch_losses, rtol=1e-4)
