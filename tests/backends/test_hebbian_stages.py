"""The forward-only Hebbian stages: torch (eager and TorchScript) and onnxruntime agree with each other and
with the definition, keep no autograd graph, update BN statistics, and leave weights alone at lr 0."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

import llcompile
from llcompile.analysis.structure import analyze
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.ort.hebbian import OrtHebbianStage
from llcompile.backends.torch.backend import HebbianTorchStage, TorchBackend
from llcompile.frontend.importer import load
from llcompile.program.program import Program
from tests.reference import hebbian_update

LR = 0.05
PREFIX = 3
BATCH = 8


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The stages' tensors are tiny: on two shared cores torch's thread pool costs more than it gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# the agreement test's programs: (zoo model, input shape, transform options)
PROGRAMS = {
    "resnet20-oja-post": ("resnet20", (3, 32, 32), dict(prefix=PREFIX)),
    "resnet20-hebb-pre": ("resnet20", (3, 32, 32), dict(prefix=2, hebbian_rule="hebb", hebbian_activation="pre")),
    "mlp-gemm": ("mlp", (3, 4, 4), dict(prefix=2)),  # Gemm layers: Reshape/Transpose around the update
}


@pytest.fixture(scope="module")
def compiled(zoo_file, tmp_path_factory):
    """compiled(kind): the program of PROGRAMS[kind] under local-sgd, saved and loaded as the runtime reads it."""
    cache = {}

    def get(kind: str) -> Program:
        if kind not in cache:
            name, shape, options = PROGRAMS[kind]
            program = llcompile.transform(zoo_file(name, input_shape=shape), "local-sgd", **options)
            cache[kind] = Program.load(program.save(tmp_path_factory.mktemp(kind) / "program"))
        return cache[kind]

    return get


@pytest.fixture(scope="module")
def program(compiled) -> Program:
    """resnet20 under local-sgd with a 3-segment prefix (Oja, post-activation)."""
    return compiled("resnet20-oja-post")


def _batch(seed: int = 0, n: int = BATCH, shape=(3, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _labels(n: int = BATCH) -> np.ndarray:
    return np.zeros(n, np.int64)


def _torch_stage(program: Program, mode: str = "eager") -> HebbianTorchStage:
    """The program's Hebbian stage alone, built by the torch backend."""
    (stage,) = TorchBackend(mode=mode).build(dataclasses.replace(program, stages=program.stages[:1]), OptimizerConfig())
    assert isinstance(stage, HebbianTorchStage)
    return stage


def _initial_state(program: Program) -> dict[str, np.ndarray]:
    stage = program.stages[0]
    return {t.name: numpy_helper.to_array(t).copy() for t in stage.model.graph.initializer
            if t.name in {*stage.params, *stage.buffers}}


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _train(stage, to_input, steps: int, lr: float = LR, shape=(3, 32, 32)) -> list[np.ndarray]:
    outputs = []
    for step in range(steps):
        result = stage.train_step(to_input(_batch(step, shape=shape)), to_input(_labels()), lr)
        assert np.isnan(result.loss) and result.correct == 0
        outputs.append(np.asarray(result.output if isinstance(result.output, np.ndarray)
                                  else result.output.detach().numpy()))
    return outputs


@pytest.mark.parametrize("kind", PROGRAMS)
def test_torch_and_ort_agree_over_three_steps(compiled, kind):
    """Weights, BN statistics and outputs after each of 3 steps at lr 0.05; and the steps did move them."""
    program, shape = compiled(kind), PROGRAMS[kind][1]
    torch_stage = _torch_stage(program)
    ort_stage = OrtHebbianStage(program.stages[0])
    torch_outputs = _train(torch_stage, torch.from_numpy, 3, shape=shape)
    ort_outputs = _train(ort_stage, np.asarray, 3, shape=shape)
    for step, (t, o) in enumerate(zip(torch_outputs, ort_outputs)):
        assert t.shape[0] == BATCH
        assert _relative_error(t, o) < 1e-4, step
    initial, torch_state, ort_state = _initial_state(program), torch_stage.state(), ort_stage.state()
    assert set(torch_state) == set(ort_state) == set(initial)
    stage = program.stages[0]
    for name in initial:
        assert _relative_error(torch_state[name], ort_state[name]) < 1e-4, name
        if name in stage.updates or name in stage.buffers:  # localized weights and running statistics
            assert _relative_error(torch_state[name], initial[name]) > 1e-3, name
        else:  # BN scale and shift, biases: nothing trains them in a forward-only stage
            np.testing.assert_array_equal(torch_state[name], initial[name], err_msg=name)
            np.testing.assert_array_equal(ort_state[name], initial[name], err_msg=name)
    # forward (inference form, running statistics) agrees too after training
    x = _batch(7, shape=shape)
    assert _relative_error(torch_stage.forward(torch.from_numpy(x)).numpy(), ort_stage.forward(x)) < 1e-4


def test_first_step_matches_the_definition(program):
    """The stem conv's new weight, for both backends, against the numpy definition on y = Relu(BN(conv x))
    computed here with batch statistics."""
    stage = program.stages[0]
    stem = analyze(load(program.source["path"])).layers[0]
    nodes = {node.name: node for node in stage.model.graph.node}
    conv = nodes[stem.name]
    (bn,) = [node for node in stage.model.graph.node if node.op_type == "BatchNormalization"
             and node.input[0] == conv.output[0]]
    epsilon = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    pads = next(list(a.ints) for a in conv.attribute if a.name == "pads")
    assert pads == [1, 1, 1, 1]
    init = _initial_state(program)
    x = _batch(0)
    z = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(init[stem.weight]).double(), padding=1)
    y = F.relu(F.batch_norm(z, None, None, torch.from_numpy(init[bn.input[1]]).double(),
                            torch.from_numpy(init[bn.input[2]]).double(), training=True, eps=epsilon)).numpy()
    expected = hebbian_update(x, y, init[stem.weight], LR, [1, 1], pads, [1, 1], 1, 1.0, 0)  # oja
    torch_stage, ort_stage = _torch_stage(program), OrtHebbianStage(stage)
    torch_stage.train_step(torch.from_numpy(x), torch.from_numpy(_labels()), LR)
    ort_stage.train_step(x, _labels(), LR)
    for backend, state in [("torch", torch_stage.state()), ("ort", ort_stage.state())]:
        np.testing.assert_allclose(state[stem.weight], expected, rtol=1e-4, atol=1e-6, err_msg=backend)


def test_torch_stage_keeps_no_autograd_graph(program):
    stage = _torch_stage(program)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    x = torch.from_numpy(_batch(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = stage.train_step(x, torch.from_numpy(_labels()), LR)
        output = stage.forward(x)
    assert saved == []
    assert result.output.requires_grad is False and result.output.grad_fn is None
    assert output.requires_grad is False
    assert all(p.grad is None for p in stage.module.parameters())


def test_bn_running_statistics_follow_the_batches(program):
    """Both backends update the running statistics (torch's unbiased variance) and agree."""
    stage = program.stages[0]
    initial = _initial_state(program)
    torch_stage, ort_stage = _torch_stage(program), OrtHebbianStage(stage)
    x = _batch(3)
    torch_stage.train_step(torch.from_numpy(x), torch.from_numpy(_labels()), LR)
    ort_stage.train_step(x, _labels(), LR)
    torch_state, ort_state = torch_stage.state(), ort_stage.state()
    assert len(stage.buffers) == 2 * 5  # mean and variance of the 5 BNs of the prefix
    for name in stage.buffers:
        assert not np.allclose(torch_state[name], initial[name]), name
        np.testing.assert_allclose(ort_state[name], torch_state[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # the stem's BN sees the stem conv's output: its running mean moves to 0.9 * 0 + 0.1 * batch mean
    model_stem = analyze(load(program.source["path"])).layers[0]
    conv = next(n for n in stage.model.graph.node if n.name == model_stem.name)
    bn = next(n for n in stage.model.graph.node if n.op_type == "BatchNormalization" and n.input[0] == conv.output[0])
    z = F.conv2d(torch.from_numpy(x), torch.from_numpy(initial[model_stem.weight]), padding=1)
    np.testing.assert_allclose(torch_state[bn.input[3]], 0.1 * z.mean(dim=(0, 2, 3)).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(torch_state[bn.input[4]], 0.9 + 0.1 * z.var(dim=(0, 2, 3), unbiased=True).numpy(),
                               rtol=1e-4, atol=1e-6)


def test_zero_learning_rate_leaves_the_weights(program):
    stage = program.stages[0]
    initial = _initial_state(program)
    torch_stage, ort_stage = _torch_stage(program), OrtHebbianStage(stage)
    _train(torch_stage, torch.from_numpy, 2, lr=0.0)
    _train(ort_stage, np.asarray, 2, lr=0.0)
    for backend, state in [("torch", torch_stage.state()), ("ort", ort_stage.state())]:
        for name in stage.updates:
            np.testing.assert_array_equal(state[name], initial[name], err_msg=f"{backend} {name}")
        assert any(not np.array_equal(state[name], initial[name]) for name in stage.buffers), backend


def test_torchscript_stage_matches_eager(program):
    eager, scripted = _torch_stage(program), _torch_stage(program, mode="script")
    assert isinstance(scripted.runner, torch.jit.ScriptModule)
    eager_outputs = _train(eager, torch.from_numpy, 2)
    scripted_outputs = _train(scripted, torch.from_numpy, 2)
    for a, b in zip(eager_outputs, scripted_outputs):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    eager_state, scripted_state = eager.state(), scripted.state()
    for name in program.stages[0].updates:
        assert not np.array_equal(eager_state[name], _initial_state(program)[name])
    for name, value in eager_state.items():
        np.testing.assert_allclose(scripted_state[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_state_moves_between_backends(program):
    """Two torch steps, then the state loaded into a fresh ORT stage: the third step agrees."""
    torch_stage = _torch_stage(program)
    _train(torch_stage, torch.from_numpy, 2)
    ort_stage = OrtHebbianStage(program.stages[0])
    ort_stage.load_state(torch_stage.state())
    x = _batch(5)
    torch_stage.train_step(torch.from_numpy(x), torch.from_numpy(_labels()), LR)
    ort_stage.train_step(x, _labels(), LR)
    ort_state = ort_stage.state()
    for name, value in torch_stage.state().items():
        assert _relative_error(ort_state[name], value) < 1e-4, name


def test_program_stage_builds_as_a_hebbian_stage(program):
    stages = TorchBackend().build(program, OptimizerConfig())
    assert [type(s).__name__ for s in stages] == ["HebbianTorchStage", "TorchStage"]
    hebbian = stages[0]
    assert set(hebbian.state()) == {*program.stages[0].params, *program.stages[0].buffers}  # no optimizer slots
    graph_inputs = [v.name for v in program.stages[0].model.graph.input]
    assert program.stages[0].labels not in graph_inputs
    onnx.checker.check_model(program.stages[0].model, full_check=True)
