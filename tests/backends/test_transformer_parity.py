"""A tiny ViT exported by torch.onnx.export, compiled and trained on both backends.

References: onnxruntime inference on the exported graph (forward) and torch autograd on the
original module (gradients). The exports cover the forms exporters write: TorchScript-based at
opset 17 (LayerNormalization op, GELU as Erf), at opset 14 (LayerNorm decomposed into
ReduceMean/Sub/Pow/Sqrt/Div), at opset 20 (Gelu op, tanh approximation), in training mode
(no constant folding: Linear weights transposed in the graph), and the dynamo exporter.
"""

import numpy as np
import onnx
import pytest
import torch

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.backend import OrtBackend
from llcompile.backends.torch.backend import TorchBackend
from llcompile.compiler.verify import relative_error, run_model
from tests.backends.torch_reference import matching_gradient, reference_gradients
from tests.fixtures.attention_graphs import EXPORTS, INPUT_SHAPE, NUM_CLASSES

BATCH = 4
NO_DECAY = OptimizerConfig(name="sgd", momentum=0.0, nesterov=False, weight_decay=0.0)


@pytest.fixture(scope="module")
def ort_backend(tmp_path_factory):
    return OrtBackend(cache_dir=tmp_path_factory.mktemp("ort-artifacts"))


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((BATCH, *INPUT_SHAPE)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, BATCH).astype(np.int64))


def initial_values(program) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for stage in program.stages for t in stage.model.graph.initializer}


@pytest.mark.parametrize("kind", EXPORTS)
def test_every_torch_parameter_is_trained(tiny_vit_file, kind):
    """LayerNorm affine, the class token, the positional embedding and the layer scale included."""
    path, module = tiny_vit_file(kind)
    program = llcompile.transform(path, strategy="bp")
    values = initial_values(program)
    (stage,) = program.stages
    trained = [values[name] for name in stage.params]
    assert len(trained) == len(list(module.parameters()))
    reference = [(p.detach().numpy(), p.detach().numpy()) for p in module.parameters()]
    for value in trained:
        matching_gradient(value, reference)  # each is some torch parameter


@pytest.mark.parametrize("strategy", [dict(strategy="bp"), dict(strategy="dbl", blocks=2)], ids=["bp", "dbl"])
@pytest.mark.parametrize("kind", EXPORTS)
def test_stage_forward_equals_onnxruntime_on_the_export(tiny_vit_file, ort_backend, kind, strategy):
    path, _ = tiny_vit_file(kind)
    program = llcompile.transform(path, **strategy)
    assert len(program.stages) == (2 if strategy["strategy"] == "dbl" else 1)
    x, _ = batch()
    expected = run_model(onnx.load(path), x)
    torch_backend = TorchBackend(device="cpu", mode="eager")
    for backend in (ort_backend, torch_backend):
        activation = backend.to_batch(x, np.zeros(BATCH, np.int64))[0]
        for stage in backend.build(program, NO_DECAY):
            activation = stage.forward(activation)
        assert relative_error(backend.to_numpy(activation), expected) < 1e-5, backend.name


@pytest.mark.parametrize("kind", EXPORTS)
def test_bp_gradients_equal_torch_autograd_on_the_module(tiny_vit_file, ort_backend, kind):
    path, module = tiny_vit_file(kind)
    program = llcompile.transform(path, strategy="bp")
    values = initial_values(program)
    x, labels = batch()
    reference = reference_gradients(module, x, labels)
    (ort_stage,) = ort_backend.build(program, NO_DECAY)
    (torch_stage,) = TorchBackend(device="cpu", mode="eager").build(program, NO_DECAY)
    ort_stage.train_step(x, labels, lr=0.0)
    torch_stage.train_step(*torch_stage_batch(x, labels), lr=0.0)
    torch_grads = {name: p.grad.numpy() for name, p in torch_stage.module.onnx_parameters().items()}
    ort_grads = ort_stage.gradients()
    assert set(ort_grads) == set(torch_grads) == set(program.stages[0].params)
    for name in program.stages[0].params:
        expected = matching_gradient(values[name], reference)
        assert np.any(expected), name
        np.testing.assert_allclose(ort_grads[name], expected, rtol=1e-4, atol=1e-6, err_msg=f"ort {name}")
        np.testing.assert_allclose(torch_grads[name], expected, rtol=1e-4, atol=1e-6, err_msg=f"torch {name}")


@pytest.mark.parametrize("kind", ["torchscript-17", "torchscript-14-decomposed", "dynamo-18"])
def test_dbl_stage_gradients_and_losses_agree_across_backends(tiny_vit_file, ort_backend, kind):
    """Two blocks cut between transformer blocks: each stage's loss and gradients on both backends."""
    path, _ = tiny_vit_file(kind)
    program = llcompile.transform(path, strategy="dbl", blocks=2)
    assert any(name.startswith("blocks.") for name in program.stages[0].params)
    x, labels = batch()
    ort_stages = ort_backend.build(program, NO_DECAY)
    torch_stages = TorchBackend(device="cpu", mode="eager").build(program, NO_DECAY)
    ort_x, torch_x = x, torch.from_numpy(x)
    for ort_stage, torch_stage in zip(ort_stages, torch_stages):
        ort_result = ort_stage.train_step(ort_x, labels, lr=0.0)
        torch_result = torch_stage.train_step(torch_x, torch.from_numpy(labels), lr=0.0)
        assert ort_result.loss == pytest.approx(torch_result.loss, rel=1e-5)
        torch_grads = {name: p.grad.numpy() for name, p in torch_stage.module.onnx_parameters().items()}
        for name, grad in ort_stage.gradients().items():
            assert np.any(grad), name
            np.testing.assert_allclose(grad, torch_grads[name], rtol=1e-4, atol=1e-6, err_msg=name)
        ort_x, torch_x = ort_result.output, torch_result.output


def torch_stage_batch(x, labels):
    return torch.from_numpy(x), torch.from_numpy(labels)


@pytest.mark.parametrize("kind", ["torchscript-17", "dynamo-18"])
def test_scripted_torch_stages_equal_onnxruntime(tiny_vit_file, kind):
    """TorchScript compiles the run-time helpers (Expand, computed Reshape) the stages call."""
    path, _ = tiny_vit_file(kind)
    program = llcompile.transform(path, strategy="dbl", blocks=2)
    x, _ = batch()
    activation = torch.from_numpy(x)
    for stage in TorchBackend(device="cpu", mode="script").build(program, NO_DECAY):
        activation = stage.forward(activation)
    assert relative_error(activation.numpy(), run_model(onnx.load(path), x)) < 1e-5
