"""Every zoo model through every strategy: valid stage graphs whose chain computes the model."""

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.models import list_models
from llcompile.compiler.verify import relative_error, run_model, run_stage_chain
from llcompile.frontend.canonical.training_mode import with_training_mode
from tests.reference import softmax_cross_entropy

STRATEGIES = [("bp", {}), ("dbl", {"blocks": 3}), ("dbl", {"blocks": 2, "aux_head": "conv"}),
              ("local-sgd", {"prefix": 2}), ("dbl-hebbian", {"prefix": 1, "blocks": 2})]


@pytest.mark.parametrize("name", list(list_models()))
def test_zoo_model_every_strategy(zoo_file, name):
    path = zoo_file(name)
    source = onnx.load(path)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    labels = np.array([1, 7], dtype=np.int64)
    batch_stats_reference = run_model(source, x)  # a training-mode export: BN on batch statistics
    running_stats_reference = run_model(with_training_mode(source, training=False), x)
    model = llcompile.load(path)
    for strategy, options in STRATEGIES:
        program = llcompile.transform(model, strategy, **options)
        assert len(program.stages) == options.get("blocks", 1) + (1 if options.get("prefix") else 0)
        for stage in program.stages:
            onnx.checker.check_model(stage.model, full_check=True)
        chain, losses = run_stage_chain(program, x, labels, training_form=True)
        assert relative_error(chain, batch_stats_reference) < 1e-4
        assert relative_error(run_model(program.eval_model, x), running_stats_reference) < 1e-4
        assert all(np.isfinite(v) and v > 0 for v in losses.values())
        assert losses[program.stages[-1].name] == pytest.approx(softmax_cross_entropy(chain, labels), rel=1e-4)
