"""TorchBackend: torch's optimizers over the generated stage modules, state by name, stage boundaries."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.torch.backend import TorchBackend
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.models import export
from tests.fixtures import legacy_models as lm
from tests.backends.chain import train_chain

SHAPE = (3, 8, 8)
LR = 0.05
SGD = OptimizerConfig()
ADAMW = OptimizerConfig(name="adamw", weight_decay=0.01)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    return export("small_cnn", tmp_path_factory.mktemp("small_cnn") / "m.onnx", input_shape=SHAPE)


@pytest.fixture(scope="module")
def dbl(model_path) -> llcompile.Program:
    return llcompile.transform(model_path, "dbl", blocks=2)


def _batch(backend: TorchBackend, n: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return backend.to_batch(rng.standard_normal((n, *SHAPE)).astype(np.float32), rng.integers(0, 10, n))


def _forward_all(stages, x):
    for stage in stages:
        x = stage.forward(x)
    return x


def test_sgd_steps_reduce_the_loss(dbl):
    backend = TorchBackend()
    stages = backend.build(dbl, SGD)
    x, labels = _batch(backend)
    history = [train_chain(stages, x, labels, LR) for _ in range(10)]
    assert all(last < first for first, last in zip(history[0], history[-1]))


def test_correct_counts_the_stage_classifier(dbl):
    """A block's prediction is its aux head's argmax, on the train-mode forward of the step."""
    backend = TorchBackend()
    stage = backend.build(dbl, SGD)[0]
    x, labels = _batch(backend, n=64)
    result = stage.train_step(x, labels, lr=0.0)  # lr 0: the step changes no weight
    with torch.no_grad():
        _, _, logits = stage.module.train()(x, labels)
    assert result.correct == int((logits.argmax(1) == labels).sum())


@pytest.mark.parametrize("config", [SGD, ADAMW], ids=["sgd", "adamw"])
def test_state_round_trip_reproduces_the_next_steps(dbl, config):
    backend = TorchBackend()
    x, labels = _batch(backend)
    trained = backend.build(dbl, config)
    for _ in range(3):
        train_chain(trained, x, labels, LR)
    restored = backend.build(dbl, config)
    for stage, source in zip(restored, trained):
        stage.load_state(source.state())
    # two steps: the second also depends on the optimizer slots the first one updated
    for _ in range(2):
        assert train_chain(restored, x, labels, LR) == train_chain(trained, x, labels, LR)
    assert torch.equal(_forward_all(restored, x), _forward_all(trained, x))  # BN statistics too


def test_state_is_named_like_the_program(dbl):
    backend = TorchBackend()
    stages = backend.build(dbl, SGD)
    fresh = stages[0].state()
    program_stage = dbl.stages[0]
    assert set(fresh) == {*program_stage.params, *program_stage.buffers, "block1/step"}
    assert int(fresh["block1/step"]) == 0
    train_chain(stages, *_batch(backend), LR)
    state = stages[0].state()
    assert set(state) == set(fresh) | {f"{p}/momentum_buffer" for p in program_stage.params}
    assert int(state["block1/step"]) == 1
    for name in program_stage.params:
        assert state[f"{name}/momentum_buffer"].shape == state[name].shape


def test_state_carries_over_to_a_program_with_other_boundaries(dbl, model_path):
    """Weights, statistics and momentum trained under dbl continue under bp, by name."""
    backend = TorchBackend()
    stages = backend.build(dbl, SGD)
    for _ in range(2):
        train_chain(stages, *_batch(backend), LR)
    carried = {k: v for stage in stages for k, v in stage.state().items()}
    (bp_stage,) = backend.build(llcompile.transform(model_path, "bp"), SGD)
    bp_stage.load_state(carried)
    state = bp_stage.state()
    shared = set(state) & set(carried)
    assert {n for n in state if "/" not in n} <= shared  # every bp parameter and buffer came over
    assert any(n.endswith("/momentum_buffer") for n in shared)
    for name in shared - {"block1/step", "block2/step"}:
        np.testing.assert_array_equal(state[name], carried[name])


def test_stage_boundary_stops_gradients(dbl):
    backend = TorchBackend()
    first, second = backend.build(dbl, SGD)
    x, labels = _batch(backend)
    output = first.train_step(x, labels, LR).output
    assert output.grad_fn is None and not output.requires_grad
    params = first.module.onnx_parameters()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in params.items()}
    second.train_step(output, labels, LR)
    for name, (value, grad) in before.items():
        assert torch.equal(params[name], value) and torch.equal(params[name].grad, grad), name


def test_forward_is_inference(dbl):
    backend = TorchBackend()
    first, second = backend.build(dbl, SGD)
    x, _ = _batch(backend)
    statistics = {n: b.clone() for n, b in first.module.onnx_buffers().items()}
    hidden = first.forward(x)
    logits = second.forward(hidden)
    assert not hidden.requires_grad and logits.shape == (len(x), 10)
    assert all(torch.equal(b, statistics[n]) for n, b in first.module.onnx_buffers().items())
    assert np.array_equal(backend.to_numpy(logits), logits.numpy())


def test_script_mode_matches_eager(dbl):
    eager, script = TorchBackend(mode="eager"), TorchBackend(mode="script")
    x, labels = _batch(eager)
    eager_stages, script_stages = eager.build(dbl, SGD), script.build(dbl, SGD)
    assert isinstance(script_stages[0].runner, torch.jit.ScriptModule)
    for _ in range(3):
        np.testing.assert_allclose(train_chain(script_stages, x, labels, LR), train_chain(eager_stages, x, labels, LR),
                                   rtol=1e-6)
    torch.testing.assert_close(_forward_all(script_stages, x), _forward_all(eager_stages, x))
    # the scripted module updates the eager module's tensors, which state() reads
    script_state, eager_state = script_stages[0].state(), eager_stages[0].state()
    for name, value in eager_state.items():
        np.testing.assert_allclose(script_state[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def _compiled_or_skip(function):
    try:
        return function()
    except torch._dynamo.exc.BackendCompilerFailed as exc:  # e.g. no working C++ compiler for inductor
        pytest.skip(f"torch.compile cannot compile here: {str(exc).splitlines()[0]}")


@pytest.fixture(scope="module")
def tiny_program() -> llcompile.Program:
    return llcompile.transform(canonicalize(lm.matmul_mlp()), "bp")


def _tiny_batch(backend: TorchBackend):
    rng = np.random.default_rng(1)
    return backend.to_batch(rng.standard_normal((8, 64)).astype(np.float32), rng.integers(0, 10, 8))


def test_compile_mode_matches_eager_in_inference(tiny_program):
    """Inference only by default: compiling the backward pass too takes ~30 s on a CPU (see below)."""
    eager, compiled = TorchBackend(mode="eager"), TorchBackend(mode="compile")
    x, _ = _tiny_batch(eager)
    (compiled_stage,) = compiled.build(tiny_program, SGD)
    (eager_stage,) = eager.build(tiny_program, SGD)
    torch.testing.assert_close(_compiled_or_skip(lambda: compiled_stage.forward(x)), eager_stage.forward(x))


# aot_eager: dynamo's graph and AOT autograd's backward, run by eager kernels (3 s); inductor's own
# code generation for the backward takes ~30 s on a CPU without its cache, so that one is slow
@pytest.mark.parametrize("compiler", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_mode_trains_like_eager(tiny_program, monkeypatch, compiler):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=compiler))
    eager, compiled = TorchBackend(mode="eager"), TorchBackend(mode="compile")
    x, labels = _tiny_batch(eager)
    (compiled_stage,) = compiled.build(tiny_program, SGD)
    (eager_stage,) = eager.build(tiny_program, SGD)
    for _ in range(3):
        loss = _compiled_or_skip(lambda: compiled_stage.train_step(x, labels, LR).loss)
        assert loss == pytest.approx(eager_stage.train_step(x, labels, LR).loss, rel=1e-5)
    assert set(compiled_stage.state()) == set(eager_stage.state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_step(dbl):
    backend = TorchBackend(device="cuda")
    stages = backend.build(dbl, SGD)
    x, labels = _batch(backend)
    assert x.is_cuda and labels.is_cuda
    losses = [train_chain(stages, x, labels, LR) for _ in range(3)]
    assert all(np.isfinite(losses).ravel())
    assert stages[0].train_step(x, labels, LR).output.is_cuda
    cpu_stages = TorchBackend().build(dbl, SGD)
    for cpu_stage, stage in zip(cpu_stages, stages):
        cpu_stage.load_state(stage.state())  # state comes back as numpy, whatever the device
    # loose: CUDA convolutions may run in TF32
    np.testing.assert_allclose(train_chain(cpu_stages, x.cpu(), labels.cpu(), LR), train_chain(stages, x, labels, LR),
                               rtol=1e-2)


def test_bad_options_are_refused(dbl):
    with pytest.raises(LLCompileError, match="mode"):
        TorchBackend(mode="jit")
    with pytest.raises(LLCompileError, match="optimizer"):
        TorchBackend().build(dbl, OptimizerConfig(name="lion"))
