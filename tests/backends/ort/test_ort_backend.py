"""The onnxruntime-training backend: torch's optimizers, gradients, BN statistics, state, parity."""

import os

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import helper, numpy_helper

import llcompile
from llcompile.backends.ort import artifacts as ort_artifacts
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.numpy_optimizers import AdamW, SGD
from llcompile.backends.ort.backend import OrtBackend, OrtStage
from llcompile.errors import LLCompileError
from llcompile.models import build
from llcompile.program.plan import StageKind
from llcompile.program.program import Stage
from llcompile.compiler.verify import run_model
from llcompile.util.ort_session import session
from llcompile.frontend.canonical.training_mode import with_training_mode
from tests.backends.chain import train_chain

INPUT_SHAPE = (3, 16, 16)
BATCH = 16
SGD_CONFIG = OptimizerConfig(name="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4)
PROGRAMS = {"bp": dict(strategy="bp"), "dbl-fc": dict(strategy="dbl", blocks=3, aux_head="fc"),
            "dbl-conv": dict(strategy="dbl", blocks=3, aux_head="conv"),
            "dbl-dgl-recon": dict(strategy="dbl", blocks=3, aux_head="dgl", aux_loss="ce+recon"),
            "dbl-pool": dict(strategy="dbl", blocks=3, aux_pool=2),  # AveragePool heads
            "dbl-conv-subset": dict(strategy="dbl", blocks=3, aux_head="conv", aux_subsample=3)}


@pytest.fixture(scope="module")
def model_path(zoo_file):
    return zoo_file("small_cnn", input_shape=INPUT_SHAPE)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    return OrtBackend(cache_dir=tmp_path_factory.mktemp("ort-artifacts"))


@pytest.fixture(scope="module")
def program(model_path):
    """program(kind): the small CNN compiled as in PROGRAMS[kind]."""
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = llcompile.transform(model_path, **PROGRAMS[kind])
        return cache[kind]

    return get


def batch(seed=0, size=BATCH):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((size, *INPUT_SHAPE)).astype(np.float32),
            rng.integers(0, 10, size).astype(np.int64))


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def torch_small_cnn(weights: dict[str, np.ndarray]) -> torch.nn.Module:
    """The zoo's torch module with the given weights (the export keeps state_dict names)."""
    module = build("small_cnn", input_shape=INPUT_SHAPE)
    missing, unexpected = module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()},
                                                 strict=False)
    assert not unexpected and all(name.endswith("num_batches_tracked") for name in missing)
    return module.train()


# --- the optimizers, against torch.optim -------------------------------------------------------

def run_numpy_and_torch(numpy_optimizer, make_torch_optimizer, steps=5, seed=0):
    """Both optimizers over ``steps`` steps with the same gradients and learning rates."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (4, 3), "b": (3,)}
    params = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    torch_params = {n: torch.nn.Parameter(torch.from_numpy(p.copy())) for n, p in params.items()}
    torch_optimizer = make_torch_optimizer(list(torch_params.values()))
    for step in range(steps):
        lr = 0.1 / (step + 1)
        grads = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
        params = numpy_optimizer.step(params, grads, lr)
        for group in torch_optimizer.param_groups:
            group["lr"] = lr
        for name, p in torch_params.items():
            p.grad = torch.from_numpy(grads[name])
        torch_optimizer.step()
        for name, p in torch_params.items():
            # atol: torch's CPU kernels fuse multiply-adds, so a value that cancels to near zero
            # keeps the operands' absolute rounding (~1e-8 here), not a relative one
            np.testing.assert_allclose(params[name], p.detach().numpy(), rtol=1e-6, atol=1e-7,
                                       err_msg=f"step {step} {name}")
    return numpy_optimizer, torch_optimizer, torch_params


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [
    (0.9, True, 5e-4), (0.9, False, 5e-4), (0.9, True, 0.0), (0.0, False, 1e-2)])
def test_sgd_matches_torch(momentum, nesterov, weight_decay):
    ours, theirs, torch_params = run_numpy_and_torch(
        SGD(momentum, nesterov, weight_decay),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))
    if momentum:
        for name, p in torch_params.items():
            np.testing.assert_allclose(ours.state()[f"{name}/momentum_buffer"],
                                       theirs.state[p]["momentum_buffer"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("betas,weight_decay", [((0.9, 0.999), 1e-2), ((0.8, 0.99), 0.0)])
def test_adamw_matches_torch(betas, weight_decay):
    ours, theirs, torch_params = run_numpy_and_torch(
        AdamW(betas, 1e-8, weight_decay),
        lambda ps: torch.optim.AdamW(ps, lr=0.1, betas=betas, eps=1e-8, weight_decay=weight_decay))
    for name, p in torch_params.items():
        for slot in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(ours.state()[f"{name}/{slot}"], theirs.state[p][slot].numpy(), rtol=1e-6)


# --- gradients and BatchNorm statistics, against torch -----------------------------------------

def test_gradients_match_torch_autograd(backend, program):
    bp = program("bp")
    (stage,) = backend.build(bp, SGD_CONFIG)
    x, labels = batch()
    loss = stage.train_step(x, labels, lr=0.1).loss

    module = torch_small_cnn(initializers(bp.stages[0].model))
    torch_loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels))
    torch_loss.backward()
    torch_grads = dict(module.named_parameters())
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    for name, grad in stage.gradients().items():
        np.testing.assert_allclose(grad, torch_grads[name].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_running_stats_after_one_step_equal_torch_batchnorm(backend, program):
    bp = program("bp")
    (stage,) = backend.build(bp, SGD_CONFIG)
    x, labels = batch()
    stage.train_step(x, labels, lr=0.1)
    module = torch_small_cnn(initializers(bp.stages[0].model))
    module(torch.from_numpy(x))  # train mode: updates running_mean and (unbiased) running_var
    torch_buffers = dict(module.named_buffers())
    state = stage.state()
    for name in bp.stages[0].buffers:
        np.testing.assert_allclose(state[name], torch_buffers[name].numpy(), rtol=1e-5, atol=1e-7, err_msg=name)


# --- training ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PROGRAMS)
def test_steps_on_a_fixed_batch_reduce_every_stage_loss(backend, program, kind):
    stages = backend.build(program(kind), SGD_CONFIG)
    x, labels = batch()
    losses = [train_chain(stages, x, labels, 0.05) for _ in range(6)]
    assert all(last < first for first, last in zip(losses[0], losses[-1])), losses


@pytest.mark.parametrize("optimizer", [SGD_CONFIG, OptimizerConfig(name="adamw", weight_decay=1e-2)],
                         ids=["sgd", "adamw"])
def test_state_round_trip_reproduces_the_next_step(backend, program, optimizer):
    bp = program("bp")
    (trained,) = backend.build(bp, optimizer)
    for seed in range(3):
        trained.train_step(*batch(seed), lr=0.05)
    state = trained.state()
    slots = ("momentum_buffer",) if optimizer.name == "sgd" else ("exp_avg", "exp_avg_sq")
    assert set(state) == {*bp.stages[0].params, *bp.stages[0].buffers, "block1/step",
                          *(f"{p}/{slot}" for p in bp.stages[0].params for slot in slots)}
    assert int(state["block1/step"]) == 3

    (restored,) = backend.build(bp, optimizer)
    restored.load_state(state)
    expected = trained.train_step(*batch(3), lr=0.05)
    actual = restored.train_step(*batch(3), lr=0.05)
    assert actual.loss == expected.loss
    for name, value in trained.state().items():
        np.testing.assert_array_equal(restored.state()[name], value, err_msg=name)


def test_load_state_refuses_a_wrong_shape(backend, program):
    (stage,) = backend.build(program("bp"), SGD_CONFIG)
    with pytest.raises(LLCompileError, match="head.fc.bias has shape"):
        stage.load_state({"head.fc.bias": np.zeros(3, np.float32)})


def test_a_blocks_training_does_not_depend_on_the_next_blocks_loss(backend, program):
    """Two chains from the same weights on the same batches, the second block's loss changed in one of
    them (other labels for blocks 2 and 3 only): block 1 ends with bit-identical parameters, BN
    statistics and momentum, while block 2 does not. An error crossing the block boundary would make
    block 1 follow the change."""
    def run(later_labels) -> list[dict[str, np.ndarray]]:
        stages = backend.build(program("dbl-fc"), SGD_CONFIG)
        for seed in range(3):
            x, labels = batch(seed)
            activation = stages[0].train_step(x, labels, lr=0.05).output
            for stage in stages[1:]:
                activation = stage.train_step(activation, later_labels(labels), lr=0.05).output
        return [stage.state() for stage in stages]

    same = run(lambda labels: labels)
    changed = run(lambda labels: (labels + 3) % 10)
    assert set(same[0]) == set(changed[0]) and len(same[0]) > 0
    for name, value in same[0].items():
        np.testing.assert_array_equal(changed[0][name], value, err_msg=name)
    params = program("dbl-fc").stages[1].params
    assert params and all(not np.array_equal(changed[1][name], same[1][name]) for name in params)


def with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers found in ``weights`` take those values."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for tensor in model.graph.initializer:
        if tensor.name in weights:
            tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    return model


def test_forward_equals_the_eval_models_with_the_trained_weights(backend, program):
    dbl = program("dbl-conv")
    stages = backend.build(dbl, SGD_CONFIG)
    for seed in range(3):
        train_chain(stages, *batch(seed), 0.05)
    x, labels = batch(seed=7)
    activation = x
    for stage, trained in zip(dbl.stages, stages):  # each stage graph in inference form
        model = with_weights(with_training_mode(stage.model, training=False), trained.state())
        (expected,) = session(model).run([stage.output], {stage.input: activation, stage.labels: labels})
        actual = trained.forward(activation)
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=stage.name)
        activation = actual
    trained_state = {name: value for stage in stages for name, value in stage.state().items()}
    np.testing.assert_allclose(activation, run_model(with_weights(dbl.eval_model, trained_state), x),
                               rtol=1e-5, atol=1e-5)  # the stages chained == the program's eval model


# --- artifacts, devices, ORT quirks ------------------------------------------------------------

def test_artifacts_are_generated_once_per_stage_graph(tmp_path, program, monkeypatch):
    dbl = program("dbl-fc")
    OrtBackend(cache_dir=tmp_path).build(dbl, SGD_CONFIG)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == len(dbl.stages)

    def must_not_run(*args):
        raise AssertionError("artifacts regenerated")

    monkeypatch.setattr(ort_artifacts, "_generate", must_not_run)
    OrtBackend(cache_dir=tmp_path).build(dbl, SGD_CONFIG)


def test_the_cache_lives_under_llcompile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLCOMPILE_CACHE", str(tmp_path))
    assert OrtBackend().cache_dir == tmp_path / "ort-artifacts"


def test_cuda_is_refused_without_a_cuda_build(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(LLCompileError, match="has no CUDA support; use the torch backend for GPU training"):
        OrtBackend(device="cuda")


def test_batchnorm1d_refuses_a_batch_of_one(backend, zoo_file):
    # as torch does: one value per channel has no unbiased variance
    (stage,) = backend.build(llcompile.transform(zoo_file("mlp", input_shape=INPUT_SHAPE), "bp"), SGD_CONFIG)
    with pytest.raises(LLCompileError, match="more than one value per channel"):
        stage.train_step(*batch(size=1), lr=0.05)


def function_stage() -> Stage:
    """x -> Gemm -> custom-domain function (Relu) -> Gemm -> loss: the function is on the gradient path."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in [("w1", (8, 4)), ("w2", (3, 8))]]
    function = helper.make_function("custom", "MyRelu", ["x"], ["y"], [helper.make_node("Relu", ["x"], ["y"])],
                                    [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w1"], ["h"], transB=1),
         helper.make_node("MyRelu", ["h"], ["a"], domain="custom"),
         helper.make_node("Gemm", ["a", "w2"], ["logits"], transB=1),
         helper.make_node("SoftmaxCrossEntropyLoss", ["logits", "labels"], ["loss"], reduction="mean")],
        "tiny", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 4]),
                 helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("loss", onnx.TensorProto.FLOAT, []),
         helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)],
                              functions=[function], ir_version=10)
    return Stage(name="tiny", kind=StageKind.FINAL, graph="tiny.onnx", input="input", output="logits", labels="labels",
                 loss="loss", params=["w1", "w2"], buffers=[], layers=[], model=model)


def test_a_local_function_on_the_gradient_path_is_inlined(tmp_path):
    stage = OrtStage(function_stage(), "logits", SGD_CONFIG, cache_dir=tmp_path)
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8).astype(np.int64)
    losses = [stage.train_step(x, labels, lr=0.1).loss for _ in range(5)]
    assert losses[-1] < losses[0]
    assert all(np.any(grad) for grad in stage.gradients().values())


# --- parity with the torch backend -------------------------------------------------------------

@pytest.mark.parametrize("kind,optimizer", [("bp", SGD_CONFIG), ("dbl-fc", SGD_CONFIG),
                                            ("dbl-conv", OptimizerConfig(name="adamw", weight_decay=1e-2)),
                                            ("dbl-pool", SGD_CONFIG), ("dbl-dgl-recon", SGD_CONFIG)],
                         ids=["bp-sgd", "dbl-fc-sgd", "dbl-conv-adamw", "dbl-pool-sgd", "dbl-dgl-recon-sgd"])
def test_twenty_steps_match_the_torch_backend(backend, program, kind, optimizer):
    """Per-step losses of both backends from the same program, weights, batches and optimizer.

    Tolerance rtol 1e-4: both run float32 with different kernels, so every step differs by
    accumulation-order rounding (~1e-7), and training feeds the differences back through the
    weights, so they can grow over the 20 steps (measured here: still ~3e-7 at step 20).
    """
    torch_backend_module = pytest.importorskip("llcompile.backends.torch.backend")
    prog = program(kind)
    torch_backend = torch_backend_module.TorchBackend(device="cpu", mode="eager")
    ort_stages, torch_stages = backend.build(prog, optimizer), torch_backend.build(prog, optimizer)
    ort_losses, torch_losses = [], []
    for step in range(20):
        x, labels = batch(seed=step)
        lr = 0.05 * (1 - step / 20) if optimizer.name == "sgd" else 1e-3
        ort_losses.append(train_chain(ort_stages, x, labels, lr))
        torch_losses.append(train_chain(torch_stages, *torch_backend.to_batch(x, labels), lr))
    np.testing.assert_allclose(ort_losses, torch_losses, rtol=1e-4)
    for ort_stage, torch_stage in zip(ort_stages, torch_stages):
        assert set(ort_stage.state()) == set(torch_stage.state())  # checkpoints carry across backends


def test_heads_on_a_batch_subset_match_the_torch_backend(backend, program):
    """Heads on every 3rd sample (their BN running variance from the subset's count of values, as
    torch's), over 5 steps on a batch of 16: the same losses, scaled correct counts and state (every
    weight, BN statistic and optimizer slot) on both backends."""
    torch_backend_module = pytest.importorskip("llcompile.backends.torch.backend")
    prog = program("dbl-conv-subset")
    torch_backend = torch_backend_module.TorchBackend(device="cpu", mode="eager")
    ort_stages, torch_stages = backend.build(prog, SGD_CONFIG), torch_backend.build(prog, SGD_CONFIG)
    for step in range(5):
        x, labels = batch(seed=step)
        tx, tlabels = torch_backend.to_batch(x, labels)
        for ort_stage, torch_stage in zip(ort_stages, torch_stages):
            ort_result, torch_result = ort_stage.train_step(x, labels, 0.05), torch_stage.train_step(tx, tlabels, 0.05)
            np.testing.assert_allclose(ort_result.loss, torch_result.loss, rtol=1e-4)
            assert ort_result.correct == torch_result.correct
            x, tx = ort_result.output, torch_result.output
        if step == 0:  # from equal weights: the statistics agree to rounding (n or n/3 values apart by ~1e-4)
            for plan, ort_stage, torch_stage in zip(prog.stages, ort_stages, torch_stages):
                ort_state, torch_state = ort_stage.state(), torch_stage.state()
                for name in plan.buffers:
                    np.testing.assert_allclose(ort_state[name], torch_state[name], rtol=1e-5, atol=1e-7, err_msg=name)
    head_stages = [stage for stage in prog.stages if stage.head]
    assert head_stages and all(stage.head.subsample == 3 for stage in head_stages)
    for ort_stage, torch_stage in zip(ort_stages, torch_stages):
        ort_state, torch_state = ort_stage.state(), torch_stage.state()
        assert set(ort_state) == set(torch_state)
        for name, value in ort_state.items():
            np.testing.assert_allclose(value, torch_state[name], rtol=1e-3, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("optimizer", [SGD_CONFIG, OptimizerConfig(name="adamw", weight_decay=1e-2)],
                         ids=["sgd", "adamw"])
def test_held_parameters_stay_and_both_backends_agree_after(backend, program, optimizer):
    """Block 1's own parameters held for 3 steps while its head trains (``hold``), then all trained
    for 3: the held ones unchanged and without optimizer slots after the first 3 steps, on both
    backends; the same losses and state on both at the end (AdamW: the bias correction of a
    parameter first updated at step 4 counts the stage's 4 steps on both, not its own 1)."""
    torch_backend_module = pytest.importorskip("llcompile.backends.torch.backend")
    prog = program("dbl-conv")
    plan = prog.stages[0]
    hold = frozenset(plan.params) - frozenset(plan.head.params)
    torch_backend = torch_backend_module.TorchBackend(device="cpu", mode="eager")
    ort_stage, torch_stage = backend.build(prog, optimizer)[0], torch_backend.build(prog, optimizer)[0]
    initial = ort_stage.state()
    lr = 0.05 if optimizer.name == "sgd" else 1e-3
    for step in range(6):
        x, labels = batch(seed=step)
        held = hold if step < 3 else frozenset()
        ort_loss = ort_stage.train_step(x, labels, lr, hold=held).loss
        torch_loss = torch_stage.train_step(*torch_backend.to_batch(x, labels), lr, hold=held).loss
        assert ort_loss == pytest.approx(torch_loss, rel=1e-4)
        if step == 2:
            for state in (ort_stage.state(), torch_stage.state()):
                for name in hold:
                    np.testing.assert_array_equal(state[name], initial[name], err_msg=name)
                    assert not [key for key in state if key.startswith(f"{name}/")], name
                assert all(not np.array_equal(state[name], initial[name]) for name in plan.head.params)
    ort_state, torch_state = ort_stage.state(), torch_stage.state()
    assert set(ort_state) == set(torch_state)
    for name, value in ort_state.items():
        np.testing.assert_allclose(value, torch_state[name], rtol=1e-4, atol=1e-6, err_msg=name)


def _threads_started_by(build_and_step) -> int:
    before = len(os.listdir("/proc/self/task"))
    kept = build_and_step()  # the sessions hold their thread pools while they live
    started = len(os.listdir("/proc/self/task")) - before
    del kept
    return started


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts the threads in /proc")
def test_threads_bound_the_operator_threads_of_every_session(model_path, tmp_path):
    """--threads reaches onnxruntime: one thread starts no operator thread pool in any session (the
    training, eval and Hebbian ones); two start one for each."""
    program = llcompile.transform(model_path, "dbl-hebbian", prefix=1, blocks=2)

    def build_and_step(threads):
        stages = OrtBackend(cache_dir=tmp_path, threads=threads).build(program, SGD_CONFIG)
        train_chain(stages, *batch(), 0.01)
        return stages

    assert _threads_started_by(lambda: build_and_step(1)) == 0
    # a pool thread for each session: the Hebbian train and eval ones, each training Module's two
    assert _threads_started_by(lambda: build_and_step(2)) >= 3
