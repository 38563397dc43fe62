"""``update_norms``, the signal every boundary and transition policy decides on:
``||W_end - W_start|| / ||W_start||`` per layer, by hand on known weights, and in a run's metrics
against the weights the program started from and the weights of the trained model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import llcompile
from llcompile.program.program import Program
from llcompile.train import train
from llcompile.train.transition import update_norms
from tests.train.test_training import _config


def test_relative_change_of_known_weights():
    before = {"w": np.array([[3.0, 4.0]], np.float32), "v": np.array([1.0, 0.0, 0.0], np.float32),
              "gone": np.ones(2, np.float32)}
    after = {"w": np.array([[3.3, 4.4]], np.float32), "v": np.array([0.0, 2.0, 0.0], np.float32)}
    norms = update_norms(before, after, {"conv": "w", "fc": "v", "old": "gone"})
    # ||(0.3, 0.4)|| / ||(3, 4)|| = 0.5 / 5; ||(-1, 2, 0)|| / 1 = sqrt(5); a layer missing after: no norm
    assert norms == {"conv": pytest.approx(0.1, rel=1e-6), "fc": pytest.approx(np.sqrt(5), rel=1e-6)}


def test_a_runs_norms_are_the_change_from_the_program_to_the_trained_model(digits_programs, tmp_path):
    result = train(digits_programs["dbl"], _config(epochs=1, data_limit=256), tmp_path / "run", show_progress=False)
    start = {i.name: numpy_helper.to_array(i) for i in Program.load(digits_programs["dbl"]).eval_model.graph.initializer}
    end = {i.name: numpy_helper.to_array(i) for i in onnx.load(result.trained_model).graph.initializer}
    layers = llcompile.analyze(llcompile.load(result.trained_model)).layers
    expected = {layer.name: float(np.linalg.norm((end[layer.weight] - start[layer.weight]).astype(np.float64))
                                  / np.linalg.norm(start[layer.weight].astype(np.float64))) for layer in layers}
    assert len(expected) > 2 and all(v > 0 for v in expected.values())
    assert result.history[0]["update_norms"] == pytest.approx(expected, rel=1e-5)
