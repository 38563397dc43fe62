"""Paths from program.json and run files stay inside their directory: no absolute path, no ``..``,
no symlink out; otherwise one clear error (exit 2 on the command line) and nothing written."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from onnx import external_data_helper, numpy_helper

import llcompile
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.cli.inspection import describe
from llcompile.program.program import Program
from llcompile.report.measured import read_run
from llcompile.train.config import TrainConfig
from llcompile.train.loop import train
from llcompile.compiler.verify import verify
from tests.fixtures import legacy_models as lm
from tests.cli.test_commands import assert_user_error, run


@pytest.fixture(scope="module")
def saved_program(tmp_path_factory):
    return llcompile.transform(canonicalize(lm.small_cnn()), "dbl", blocks=2).save(
        tmp_path_factory.mktemp("program") / "p")


@pytest.fixture
def program_dir(saved_program, tmp_path):
    """A fresh copy of the program, and beside it (outside it) a copy of its first stage graph."""
    copy = tmp_path / "p"
    shutil.copytree(saved_program, copy)
    first = json.loads((copy / "program.json").read_text())["stages"][0]["graph"]
    shutil.copy(copy / first, tmp_path / "outside.onnx")
    return copy


def _edit_first_graph_path(program_dir, graph: str) -> None:
    path = program_dir / "program.json"
    data = json.loads(path.read_text())
    data["stages"][0]["graph"] = graph
    path.write_text(json.dumps(data))


def _first_graph(program_dir):
    return program_dir / json.loads((program_dir / "program.json").read_text())["stages"][0]["graph"]


@pytest.mark.parametrize("graph", ["../outside.onnx", "stages/../../outside.onnx", "ABSOLUTE", "", "C:\\x.onnx"])
def test_stage_graph_path_must_stay_inside(program_dir, graph):
    _edit_first_graph_path(program_dir, str(program_dir.parent / "outside.onnx") if graph == "ABSOLUTE" else graph)
    with pytest.raises(LLCompileError, match="inside the directory|not a file name"):
        Program.load(program_dir)


def test_stage_graph_symlink_out_is_refused(program_dir):
    graph = _first_graph(program_dir)
    graph.unlink()
    graph.symlink_to(program_dir.parent / "outside.onnx")
    with pytest.raises(LLCompileError, match="leads out of the directory"):
        Program.load(program_dir)


def test_stages_folder_symlink_out_is_refused(program_dir):
    shutil.move(program_dir / "stages", program_dir.parent / "stages_elsewhere")
    (program_dir / "stages").symlink_to(program_dir.parent / "stages_elsewhere")
    with pytest.raises(LLCompileError, match="leads out of the directory"):
        Program.load(program_dir)


@pytest.mark.parametrize("name", ["eval_model.onnx", "program.json"])
def test_fixed_files_symlinked_out_are_refused(program_dir, name):
    shutil.move(program_dir / name, program_dir.parent / name)
    (program_dir / name).symlink_to(program_dir.parent / name)
    with pytest.raises(LLCompileError, match="leads out of the directory"):
        Program.load(program_dir)


def test_symlink_inside_the_directory_is_fine(program_dir):
    graph = _first_graph(program_dir)
    (program_dir / "stages" / "link.onnx").symlink_to(graph.name)
    _edit_first_graph_path(program_dir, "stages/link.onnx")
    assert Program.load(program_dir).stages[0].model is not None


def test_external_data_of_a_stage_graph_must_stay_inside(program_dir):
    graph = _first_graph(program_dir)
    model = onnx.load(graph)
    tensor = model.graph.initializer[0]
    (program_dir.parent / "secret.bin").write_bytes(numpy_helper.to_array(tensor).tobytes())
    external_data_helper.set_external_data(tensor, location="../../secret.bin")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    onnx.save_model(model, graph)
    with pytest.raises(LLCompileError, match="outside the model's folder"):
        Program.load(program_dir)


def test_command_line_refuses_with_one_line_and_writes_nothing(program_dir):
    _edit_first_graph_path(program_dir, "../outside.onnx")
    run_dir = program_dir.parent / "run"
    assert_user_error(run("train", program_dir, "--data", "synthetic:16", "--run-dir", run_dir), "inside")
    assert not run_dir.exists()
    assert_user_error(run("inspect", program_dir), "inside")


def test_verify_reads_only_the_recorded_source_it_was_compiled_from(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save_model(lm.small_cnn(), source)
    program_dir = llcompile.transform(source, "bp").save(tmp_path / "p")
    assert verify(program_dir).worst < 1e-4
    other = tmp_path / "other.onnx"
    onnx.save_model(lm.no_parametric_layer(), other)
    data = json.loads((program_dir / "program.json").read_text())
    data["source"]["path"] = str(other)
    (program_dir / "program.json").write_text(json.dumps(data))
    with pytest.raises(LLCompileError, match="not the file the program was compiled from; pass model"):
        verify(program_dir)
    assert verify(program_dir, source).worst < 1e-4


@pytest.fixture(scope="module")
def trained_run(saved_program, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "run"
    train(saved_program, TrainConfig(data="synthetic:16", epochs=1, batch_size=8), run_dir, show_progress=False)
    return run_dir


def _run_file_symlinked_out(trained_run, tmp_path, name):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    shutil.move(run_dir / name, tmp_path / name)
    (run_dir / name).symlink_to(tmp_path / name)
    return run_dir


@pytest.mark.parametrize("name", ["checkpoint.npz", "run.json"])
def test_resume_refuses_run_files_symlinked_out(saved_program, trained_run, tmp_path, name):
    run_dir = _run_file_symlinked_out(trained_run, tmp_path, name)
    before = (tmp_path / name).read_bytes()
    with pytest.raises(LLCompileError, match="leads out of the directory"):
        train(saved_program, TrainConfig(data="synthetic:16", epochs=2, batch_size=8), run_dir, resume=True,
              show_progress=False)
    assert (tmp_path / name).read_bytes() == before


@pytest.mark.parametrize("name", ["run.json", "metrics.jsonl"])
def test_inspect_and_report_refuse_run_files_symlinked_out(trained_run, tmp_path, name):
    run_dir = _run_file_symlinked_out(trained_run, tmp_path, name)
    with pytest.raises(LLCompileError, match="leads out of the directory"):
        read_run(run_dir)
    with pytest.raises(LLCompileError, match="leads out of the directory"):
        describe(run_dir)
