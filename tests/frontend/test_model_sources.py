"""A model as a pipeline holds it: the path of a file, its bytes, an onnx.ModelProto or an onnx_ir.Model,
straight from ``ir.from_proto`` (not canonical: static batch 1, BatchNormalization in inference form).
``load``, ``transform``, ``analyze`` and the report take all four, canonicalise them the same way,
and leave the caller's object as it was."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest
from onnx import numpy_helper

import llcompile
from llcompile.errors import LLCompileError
from llcompile.report import build_report
from tests.fixtures import legacy_models as lm


@pytest.fixture
def sources(tmp_path):
    proto = lm.small_cnn()  # batch 1, BN in inference form: the canonical form changes both
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, path)
    return {"path": path, "str": str(path), "bytes": path.read_bytes(), "proto": proto,
            "ir": ir.from_proto(proto)}


def canonical_bytes(model: ir.Model) -> bytes:
    return ir.to_proto(model).SerializeToString(deterministic=True)


def test_every_form_loads_to_the_same_canonical_model(sources):
    expected = canonical_bytes(llcompile.load(sources["path"]))
    for form, source in sources.items():
        assert canonical_bytes(llcompile.load(source)) == expected, form


def test_the_callers_objects_are_left_as_they_were(sources):
    proto_before = sources["proto"].SerializeToString(deterministic=True)
    ir_before = ir.to_proto(sources["ir"]).SerializeToString(deterministic=True)
    llcompile.transform(sources["proto"], "dbl", blocks=2)
    llcompile.transform(sources["ir"], "dbl", blocks=2)
    assert sources["proto"].SerializeToString(deterministic=True) == proto_before
    assert ir.to_proto(sources["ir"]).SerializeToString(deterministic=True) == ir_before


def test_transform_of_every_form_emits_the_same_program(sources):
    programs = {form: llcompile.transform(source, "dbl", blocks=2) for form, source in sources.items()}
    reference = programs["path"]
    assert reference.source["path"] == str(sources["path"].resolve())
    for form, program in programs.items():
        assert [s.model for s in program.stages] == [s.model for s in reference.stages], form
        assert program.eval_model == reference.eval_model, form
        if form in ("bytes", "proto", "ir"):
            assert program.source == {"path": None, "sha256": None}


def test_analyze_and_the_report_take_a_model_in_memory(sources):
    assert llcompile.analyze(sources["ir"]).cut_points == llcompile.analyze(sources["path"]).cut_points
    report = build_report(sources["proto"], [])
    assert report["source"] == {"path": None, "kind": "model"}
    assert report["strategies"].keys() == build_report(sources["path"], [])["strategies"].keys()


def test_a_model_in_memory_with_external_data_is_refused(sources):
    proto = sources["proto"]
    tensor = proto.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location="weights.bin")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    with pytest.raises(LLCompileError, match=rf"tensor '{tensor.name}' keeps its data in an external file; give"):
        llcompile.load(proto)


@pytest.mark.parametrize("source, message", [
    (b"\x00\x01garbage" * 50, "the model bytes: not a readable ONNX model"),
    (onnx.ModelProto(), "the ModelProto: not an ONNX model (no graph nodes)"),
    (42, "a model is the path of an ONNX file, its bytes, an onnx.ModelProto or an onnx_ir.Model, not int"),
])
def test_bad_models_in_memory_are_one_line_errors(source, message):
    with pytest.raises(LLCompileError) as error:
        llcompile.load(source)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_weights_of_a_proto_survive_canonicalisation(sources):
    weights = {t.name: numpy_helper.to_array(t) for t in sources["proto"].graph.initializer}
    loaded = ir.to_proto(llcompile.load(sources["proto"]))
    kept = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer if t.name in weights}
    assert kept and all((kept[name] == weights[name]).all() for name in kept)
