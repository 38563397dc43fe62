"""model_readout / is_token_tensor: how the model's own head reads its last features, on real exports."""

import pytest

import llcompile
from llcompile.frontend.graph_builder import value_named
from llcompile.analysis.readout import CLASS_TOKEN, MEAN, Readout, is_token_tensor, model_readout
from tests.fixtures.token_models import export_tiny


@pytest.mark.parametrize("name, expected", [
    ("vit", Readout(CLASS_TOKEN, "before")),   # head(norm(x)[:, 0])
    ("mixer", Readout(MEAN, "before")),        # head(norm(x).mean(1))
    ("convnext", Readout(MEAN, "after")),      # head(norm(x.mean((2, 3))))
])
def test_readout_of_the_model_heads(tmp_path, name, expected):
    export_tiny(name, tmp_path / "m.onnx")
    assert model_readout(llcompile.load(tmp_path / "m.onnx").graph) == expected


def test_a_cnn_head_has_no_norm(zoo_file):
    assert model_readout(llcompile.load(zoo_file("small_cnn")).graph) == Readout(MEAN, None)


@pytest.mark.parametrize("name, tokens", [("vit", True), ("mixer", True), ("convnext", False)])
def test_residual_streams_are_token_tensors_feature_maps_are_not(tmp_path, name, tokens):
    export_tiny(name, tmp_path / "m.onnx")
    model = llcompile.load(tmp_path / "m.onnx")
    analysis = llcompile.analyze(model)
    multi_axis = [c for c in analysis.cut_points if len(value_named(model.graph, c).shape) > 2]
    assert multi_axis
    assert all(is_token_tensor(value_named(model.graph, c)) == tokens for c in multi_axis)
