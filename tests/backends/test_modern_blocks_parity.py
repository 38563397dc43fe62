"""ConvNeXt, MLP-Mixer and speed-record style networks (tests/fixtures/modern_blocks.py), exported by
torch.onnx.export and trained on both backends: stage outputs against onnxruntime on the export,
bp gradients against torch autograd on the module, dbl in 2 blocks with equal losses on both."""

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.backend import OrtBackend
from llcompile.backends.torch.backend import TorchBackend
from llcompile.models import export
from llcompile.compiler.verify import relative_error, run_model
from tests.backends.torch_reference import matching_gradient, reference_gradients
from tests.fixtures.modern_blocks import INPUT_SHAPE, NUM_CLASSES, build

BATCH = 4
NO_DECAY = OptimizerConfig(name="sgd", momentum=0.0, nesterov=False, weight_decay=0.0)
# BatchNorm is folded into the convs by the eval-mode exports: the speed-record net is exported in training form
CASES = [("convnext", "eval", 17), ("convnext", "dynamo", 18), ("mixer", "eval", 17), ("mixer", "dynamo", 18),
         ("speed-record", "training", 17)]
IDS = [f"{name}-{mode}" for name, mode, _ in CASES]


@pytest.fixture(scope="module")
def exported(build_once):
    def get(name, mode, opset):
        path = build_once(f"modern_{name}_{mode}.onnx", lambda p: export(
            build(name), p, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, mode=mode, opset=opset))
        return path, build(name)

    return get


@pytest.fixture(scope="module")
def ort_backend(tmp_path_factory):
    return OrtBackend(cache_dir=tmp_path_factory.mktemp("ort-artifacts"))


def batch():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((BATCH, *INPUT_SHAPE)).astype(np.float32),
            rng.integers(0, NUM_CLASSES, BATCH).astype(np.int64))


@pytest.mark.parametrize("name,mode,opset", CASES, ids=IDS)
def test_bp_forward_and_gradients(exported, ort_backend, name, mode, opset):
    path, module = exported(name, mode, opset)
    program = llcompile.transform(path, strategy="bp")
    (stage,) = program.stages
    values = {t.name: onnx.numpy_helper.to_array(t) for t in stage.model.graph.initializer}
    assert len(stage.params) == len(list(module.parameters()))
    x, labels = batch()
    reference = reference_gradients(module.train(), x, labels)
    expected_logits = run_model(onnx.load(path), x) if mode != "training" else None
    for backend in (ort_backend, TorchBackend(device="cpu", mode="eager")):
        (trainable,) = backend.build(program, NO_DECAY)
        bx, blabels = backend.to_batch(x, labels)
        if expected_logits is not None:  # a training-form export's BN uses batch statistics at inference too
            assert relative_error(backend.to_numpy(trainable.forward(bx)), expected_logits) < 1e-5
        trainable.train_step(bx, blabels, lr=0.0)
        grads = (trainable.gradients() if backend is ort_backend else
                 {k: p.grad.numpy() for k, p in trainable.module.onnx_parameters().items()})
        for param in stage.params:
            np.testing.assert_allclose(grads[param], matching_gradient(values[param], reference), rtol=1e-4,
                                       atol=1e-5, err_msg=f"{backend.name} {param}")


@pytest.mark.parametrize("name,mode,opset", CASES, ids=IDS)
def test_dbl_two_blocks_have_equal_losses_on_both_backends(exported, ort_backend, name, mode, opset):
    path, _ = exported(name, mode, opset)
    program = llcompile.transform(path, strategy="dbl", blocks=2)
    assert len(program.stages) == 2
    x, labels = batch()
    losses = []
    for backend in (ort_backend, TorchBackend(device="cpu", mode="eager")):
        activation, blabels = backend.to_batch(x, labels)
        stage_losses = []
        for trainable in backend.build(program, NO_DECAY):
            result = trainable.train_step(activation, blabels, lr=0.0)
            stage_losses.append(result.loss)
            activation = result.output
        losses.append(stage_losses)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
