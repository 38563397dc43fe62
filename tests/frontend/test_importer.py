"""Import: model-zoo-era files, exporter variants, and the refusals."""

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.ops.registry import MAX_OPSET, MIN_OPSET
from llcompile.compiler.verify import relative_error, run_model
from tests.fixtures import legacy_models as legacy


def _opset(model) -> int:
    return model.opset_imports[""]


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_legacy_caffe_style_is_canonicalised(save_model, opset):
    source = legacy.legacy_caffe_style(opset=opset)
    model = llcompile.load(save_model(source))
    graph = model.graph
    assert _opset(model) == MIN_OPSET
    assert [v.name for v in graph.inputs] == ["data_0"]  # initializers no longer listed as inputs
    assert str(graph.inputs[0].shape[0]) == "N"  # static batch 1 made symbolic
    assert len({n.name for n in graph}) == len(list(graph)) and all(n.name for n in graph)
    for node in graph:
        if node.op_type == "BatchNormalization":
            assert node.attributes["training_mode"].as_int() == 1 and len(node.outputs) == 3
    analysis = llcompile.analyze(model)
    assert analysis.logits == "fc_1" and analysis.num_classes == 10  # the Softmax's input


def test_legacy_program_matches_the_source_at_batch_one(save_model, tmp_path):
    path = save_model(legacy.legacy_caffe_style(opset=8))
    program = llcompile.transform(path, "dbl", blocks=2)
    program.save(tmp_path / "prog")
    from llcompile.compiler.verify import verify

    errors = verify(tmp_path / "prog").errors
    assert max(errors.values()) < 1e-5


def test_external_data_inside_the_folder_loads(tmp_path):
    path = legacy.legacy_external_data(tmp_path)
    model = llcompile.load(path)
    reference = run_model(onnx.load(path), np.ones((2, 3, 16, 16), np.float32))
    program = llcompile.transform(model, "bp")
    assert relative_error(run_model(program.eval_model, np.ones((2, 3, 16, 16), np.float32)), reference) < 1e-6


def test_external_data_outside_the_folder_is_refused(tmp_path):
    path = legacy.external_data_escaping(tmp_path)
    with pytest.raises(llcompile.LLCompileError, match="outside the model's folder"):
        llcompile.load(path)


def test_bn_training_mode_export(save_model):
    model = llcompile.load(save_model(legacy.bn_training_mode_model()))
    bns = [n for n in model.graph if n.op_type == "BatchNormalization"]
    assert bns and all(len(n.outputs) == 3 for n in bns)


@pytest.mark.parametrize("builder, message", [
    (legacy.no_parametric_layer, "no parametric layer"),
    (legacy.non_logits_output, "not class logits"),
])
def test_strategy_refusals(save_model, builder, message):
    with pytest.raises(llcompile.LLCompileError, match=message):
        llcompile.transform(save_model(builder()), "bp")


@pytest.mark.parametrize("builder, message", [
    (legacy.unsupported_op_model, "unsupported op.*GridSample"),
    (legacy.two_outputs_model, "expected one output"),
])
def test_import_refusals(save_model, builder, message):
    with pytest.raises(llcompile.LLCompileError, match=message):
        llcompile.load(save_model(builder()))


def test_not_onnx_and_truncated(tmp_path, save_model):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(llcompile.LLCompileError, match="ONNX model"):
        llcompile.load(text)
    good = save_model(legacy.small_cnn())
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(llcompile.LLCompileError):
        llcompile.load(truncated)
    with pytest.raises(llcompile.LLCompileError, match="no such file"):
        llcompile.load(tmp_path / "missing.onnx")


def test_checker_failure(save_model):
    model = legacy.small_cnn()
    model.graph.node[0].input[0] = "undefined_tensor"
    with pytest.raises(llcompile.LLCompileError, match="checker"):
        llcompile.load(save_model(model))


def test_too_new_opset(save_model):
    model = legacy.small_cnn()
    model.opset_import[0].version = MAX_OPSET + 1
    with pytest.raises(llcompile.LLCompileError, match="newer than"):
        llcompile.load(save_model(model))


@pytest.mark.parametrize("mode", ["training", "eval", "eval-unfolded", "dynamo"])
def test_torch_exports_of_every_form(zoo_file, mode, tmp_path):
    path = zoo_file("resnet20", mode=mode)
    model = llcompile.load(path)
    bns = [n for n in model.graph if n.op_type == "BatchNormalization"]
    if mode in ("eval", "dynamo"):
        assert not bns  # folded into the convolutions
    else:
        assert len(bns) == 21 and all(n.attributes["training_mode"].as_int() == 1 for n in bns)
    analysis = llcompile.analyze(model)
    assert len(analysis.layers) == 22 and len(analysis.cut_points) == 10
    program = llcompile.transform(model, "dbl", blocks=4)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    source = onnx.load(path)
    if mode == "training":  # the source runs BN on batch statistics; compare in inference form
        from llcompile.frontend.canonical.training_mode import with_training_mode
        source = with_training_mode(source, training=False)
    assert relative_error(run_model(program.eval_model, x), run_model(source, x)) < 1e-4


@pytest.mark.parametrize("opset", [13, 21])
def test_torch_export_opsets(tmp_path, opset):
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    path = export("small_cnn", tmp_path / "m.onnx", opset=opset)
    model = llcompile.load(path)
    assert _opset(model) == max(opset, MIN_OPSET)
    assert len(llcompile.transform(model, "dbl", blocks=2).stages) == 2
