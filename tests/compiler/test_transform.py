"""Every strategy on generated CNN graphs: the emitted program is valid ONNX and computes the model."""

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings

import llcompile
from llcompile.compiler.verify import relative_error, run_model, run_stage_chain
from tests.fixtures.cnn_graphs import build_cnn, cnn_specs

STRATEGY_OPTIONS = [("bp", {}), ("dbl", {"blocks": 2}), ("dbl", {"blocks": 3, "aux_head": "conv"}),
                    ("local-sgd", {"prefix": 1}), ("dbl-hebbian", {"prefix": 1, "blocks": 2})]


def _check_program(program: llcompile.Program, model: onnx.ModelProto, batch: int = 3):
    for stage in program.stages:
        onnx.checker.check_model(stage.model, full_check=True)
        graph_inputs = [v.name for v in stage.model.graph.input]
        graph_outputs = [v.name for v in stage.model.graph.output]
        if stage.updates is not None:  # forward-only Hebbian stage
            assert graph_inputs == [stage.input, stage.lr_input]
            assert graph_outputs == [stage.output, *stage.updates.values()]
            continue
        assert graph_inputs == [stage.input, stage.labels]  # stop-gradient: the block input is a graph input
        assert graph_outputs == [stage.loss, stage.output]
    onnx.checker.check_model(program.eval_model, full_check=True)
    x = np.random.default_rng(0).standard_normal([batch, *program.input["shape"][1:]]).astype(np.float32)
    reference = run_model(model, x)
    chain, losses = run_stage_chain(program, x, training_form=False)
    assert relative_error(chain, reference) < 1e-4
    assert relative_error(run_model(program.eval_model, x), reference) < 1e-4
    assert all(np.isfinite(loss) for loss in losses.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=cnn_specs())
def test_random_cnns_every_strategy(spec, tmp_path_factory):
    model = build_cnn(spec)
    path = tmp_path_factory.mktemp("cnn") / "model.onnx"
    onnx.save_model(model, path)
    analysis = llcompile.analyze(llcompile.load(path))
    assert analysis.cut_points == spec.expected_cut_points()
    for strategy, options in STRATEGY_OPTIONS:
        blocks, prefix = options.get("blocks"), options.get("prefix", 0)
        if (blocks or 1) + prefix > len(analysis.cut_points) + 1:
            with pytest.raises(llcompile.LLCompileError, match="at most"):
                llcompile.transform(path, strategy, **options)
            continue
        program = llcompile.transform(path, strategy, **options)
        assert len(program.stages) == (blocks or 1) + (1 if prefix else 0)
        _check_program(program, model)


def test_dbl_stages_partition_the_layers(save_model):
    from tests.fixtures.cnn_graphs import CnnSpec, UnitSpec

    spec = CnnSpec(seed=1, in_channels=3, size=16, classes=5,
                   units=[UnitSpec("conv", 8, bn=True, relu=True), UnitSpec("res", 8), UnitSpec("pool"),
                          UnitSpec("concat", branch_channels=(4, 6)), UnitSpec("conv", 12, stride=2)])
    path = save_model(build_cnn(spec))
    analysis = llcompile.analyze(llcompile.load(path))
    program = llcompile.transform(path, "dbl", blocks=3)
    stage_layers = [name for stage in program.stages for name in stage.layers]
    assert stage_layers == [layer.name for layer in analysis.layers]
    assert program.cuts == [program.stages[i].output for i in range(2)]
    head_params = {p for stage in program.stages if stage.head for p in stage.head.params}
    model_params = {p for stage in program.stages for p in stage.params} - head_params
    assert len(head_params) == 4  # two FC heads: weight and bias each
    # every trainable model parameter belongs to exactly one stage
    assert sum(len(set(s.params) - head_params) for s in program.stages) == len(model_params)


def test_every_registered_strategy_is_exercised():
    from tests.compiler.test_zoo_strategies import STRATEGIES as ZOO_STRATEGIES

    assert {name for name, _ in STRATEGY_OPTIONS} == set(llcompile.STRATEGIES)
    assert {name for name, _ in ZOO_STRATEGIES} == set(llcompile.STRATEGIES)
