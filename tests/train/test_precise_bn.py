"""Precise BN statistics: every BatchNormalization's running mean and variance, after the recomputation,
against the batches' own statistics computed from the stage graphs by onnxruntime; weights and
optimizer state untouched; the same on both backends."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.backends import make_backend
from llcompile.backends.base import OptimizerConfig
from llcompile.train.precise_bn import precise_batch_statistics, running_statistics
from llcompile.util.ort_session import session

SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def program(zoo_file):
    """ResNet-20 in two blocks with conv heads: BNs in both stages and in the first block's head."""
    return llcompile.transform(zoo_file("resnet20", input_shape=SHAPE), "dbl", blocks=2, aux_head="conv",
                               boundary_policy="fixed")


def _batches(count: int = 3, size: int = 6):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((size, *SHAPE)).astype(np.float32), rng.integers(0, 10, size).astype(np.int64))
            for _ in range(count)]


def _reference(stages, batches) -> dict[str, np.ndarray]:
    """Each BN's mean over the batches of its input's per-channel mean and unbiased variance, the
    stages run in training form (batch statistics) by onnxruntime with the given weights."""
    sums: dict[str, np.ndarray] = {}
    for x, labels in batches:
        activation = x
        for stage in stages:
            model = onnx.ModelProto()
            model.CopyFrom(stage.model)
            norms = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
            model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n.input[0]) for n in norms)
            names = [o.name for o in model.graph.output]
            outputs = dict(zip(names, session(model).run(None, {stage.input: activation, stage.labels: labels})))
            for norm in norms:
                values = outputs[norm.input[0]]
                axes = (0, *range(2, values.ndim))
                for name, statistic in ((norm.input[3], values.mean(axes)), (norm.input[4], values.var(axes, ddof=1))):
                    sums[name] = sums.get(name, 0) + statistic.astype(np.float64)
            activation = outputs[stage.output]
    return {name: total / len(batches) for name, total in sums.items()}


@pytest.mark.parametrize("backend_name", ["torch", "ort"])
def test_statistics_are_the_batches_own_and_nothing_else_changes(program, backend_name):
    backend = make_backend(backend_name)
    stages = backend.build(program, OptimizerConfig())
    x, labels = _batches(1)[0]
    for stage in stages:  # a step first, so that there are optimizer slots to keep
        x = stage.train_step(*backend.to_batch(x, labels), lr=0.1).output
        x = backend.to_numpy(x)
    before = {k: v for stage in stages for k, v in stage.state().items()}
    stages_after_step = _with_weights(program, before)
    batches = _batches()
    statistics = precise_batch_statistics(stages, program, backend, batches)
    assert set(statistics) == set(running_statistics(program)) and len(statistics) > 10
    reference = _reference(stages_after_step, batches)
    for name, value in statistics.items():
        np.testing.assert_allclose(value, reference[name], rtol=1e-3, atol=1e-5, err_msg=name)
    after = {k: v for stage in stages for k, v in stage.state().items()}
    unchanged = [k for k in before if k not in statistics]
    assert unchanged and all(np.array_equal(before[k], after[k]) for k in unchanged)


def _with_weights(program, state) -> list[SimpleNamespace]:
    """``program``'s stages with ``state``'s values as their initializers (what the reference runs)."""
    views = []
    for stage in program.stages:
        model = onnx.ModelProto()
        model.CopyFrom(stage.model)
        for tensor in model.graph.initializer:
            if tensor.name in state:
                tensor.CopyFrom(onnx.numpy_helper.from_array(state[tensor.name].astype(np.float32), tensor.name))
        views.append(SimpleNamespace(model=model, input=stage.input, output=stage.output, labels=stage.labels))
    return views


def test_the_loop_recomputes_them_before_each_evaluation_and_records_it(program, tmp_path):
    """After a run's last epoch the checkpoint's running statistics are the first N batches' own, of
    that epoch's batch order, at the final weights; the metrics say how many batches."""
    from itertools import islice

    from llcompile.data.dataset import fit_to_program
    from llcompile.data.in_memory import IN_MEMORY, in_memory_splits
    from llcompile.train import TrainConfig
    from llcompile.train.loop import train_loader

    rng = np.random.default_rng(1)
    data = ((rng.standard_normal((40, *SHAPE)).astype(np.float32), rng.integers(0, 10, 40)),) * 2
    result = llcompile.fit(program, data, run_dir=tmp_path / "run", epochs=1, batch_size=8, precise_bn=2)
    assert result.history[-1]["precise_bn_batches"] == 2
    state = dict(np.load(tmp_path / "run" / "checkpoint.npz"))
    dataset = fit_to_program(IN_MEMORY, in_memory_splits(*data), SHAPE, program.num_classes)
    batches = list(islice(train_loader(dataset, TrainConfig(data=IN_MEMORY, epochs=1, batch_size=8), 0), 2))
    reference = _reference(_with_weights(program, state), batches)
    for name in running_statistics(program):
        np.testing.assert_allclose(state[name], reference[name], rtol=1e-3, atol=1e-5, err_msg=name)
    off = llcompile.fit(program, data, run_dir=tmp_path / "off", epochs=1, batch_size=8, precise_bn=0)
    assert off.history[-1]["precise_bn_batches"] == 0
