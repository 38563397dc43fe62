"""The command line: the happy path end to end, and one-line errors with exit code 2 for bad input."""

import json
import subprocess
import sys

import onnx
import pytest

from tests.fixtures import legacy_models as legacy


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llcompile", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_export_transform_inspect_verify(tmp_path):
    model = tmp_path / "resnet20.onnx"
    assert run("models", "export", "resnet20", "-o", model).returncode == 0
    out = tmp_path / "prog"
    result = run("transform", model, "-o", out, "--strategy", "dbl", "--blocks", "3", "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["strategy"] == "dbl" and len(summary["stages"]) == 3
    program = json.loads((out / "program.json").read_text())
    for key in ("format_version", "llcompile_version", "strategy", "options", "source", "stages", "cuts",
                "num_classes"):
        assert key in program
    assert program["source"]["sha256"] and program["num_classes"] == 10
    for stage in program["stages"]:
        for key in ("name", "kind", "graph", "input", "output", "labels", "loss", "params"):
            assert key in stage
        onnx.checker.check_model(onnx.load(out / stage["graph"]), full_check=True)
    text = run("inspect", out)
    assert text.returncode == 0 and "block3" in text.stdout and "aux head fc" in text.stdout
    model_view = json.loads(run("inspect", model, "--format", "json").stdout)
    assert len(model_view["cut_points"]) == 10
    verified = run("verify", out)
    assert verified.returncode == 0 and verified.stdout.strip().endswith("ok")
    # a cut inside a residual unit: listed by inspect, taken by --cuts with --inner-cuts
    assert len(model_view["inner_cut_points"]) == 9 and "inner cut points (9)" in run("inspect", model).stdout
    inner = tmp_path / "inner"
    cut = model_view["inner_cut_points"][3]
    result = run("transform", model, "-o", inner, "--cuts", cut, "--inner-cuts", "--boundary-policy", "fixed")
    assert result.returncode == 0, result.stderr
    assert json.loads((inner / "program.json").read_text())["cuts"] == [cut]
    assert_user_error(run("transform", model, "-o", tmp_path / "refused", "--cuts", cut), "not a cut point")
    assert not (tmp_path / "refused").exists()


def test_strategies_and_models_list():
    strategies = json.loads(run("strategies", "--format", "json").stdout)
    assert {"bp", "dbl", "local-sgd", "dbl-hebbian"} <= set(strategies)
    assert "prefix" in strategies["local-sgd"]["options"] and "blocks" not in strategies["local-sgd"]["options"]
    listed = run("models", "list").stdout
    for name in ("resnet20", "resnet56", "resnet18", "vgg11_bn", "vgg16_bn", "mobilenetv2", "small_cnn", "mlp"):
        assert name in listed


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "small.onnx"
    onnx.save_model(legacy.small_cnn(), path)
    return path


def test_missing_file(tmp_path):
    assert_user_error(run("transform", tmp_path / "nope.onnx", "-o", tmp_path / "out"), "no such file")
    assert not (tmp_path / "out").exists()


def test_not_onnx(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"\x00\x01garbage" * 50)
    assert_user_error(run("transform", path, "-o", tmp_path / "out"), "x.onnx: not a readable ONNX model")
    assert not (tmp_path / "out").exists()


def test_truncated(tmp_path, small_model):
    path = tmp_path / "t.onnx"
    path.write_bytes(small_model.read_bytes()[:300])
    assert_user_error(run("inspect", path), "t.onnx: not a readable ONNX model")


def test_checker_failure(tmp_path):
    model = legacy.small_cnn()
    model.graph.node[0].input[0] = "nowhere"
    onnx.save_model(model, tmp_path / "bad.onnx")
    assert_user_error(run("transform", tmp_path / "bad.onnx", "-o", tmp_path / "out"), "checker")


@pytest.mark.parametrize("builder, fragment", [
    (legacy.no_parametric_layer, "no parametric layer"),
    (legacy.non_logits_output, "not class logits"),
    (legacy.unsupported_op_model, "GridSample"),
])
def test_model_refusals(tmp_path, builder, fragment):
    onnx.save_model(builder(), tmp_path / "m.onnx")
    assert_user_error(run("transform", tmp_path / "m.onnx", "-o", tmp_path / "out"), fragment)
    assert list(tmp_path.iterdir()) == [tmp_path / "m.onnx"]  # nothing written, not even a temp dir


def test_too_many_blocks(tmp_path, small_model):
    assert_user_error(run("transform", small_model, "-o", tmp_path / "out", "--blocks", "9"), "at most 3")


def test_unknown_cut(tmp_path, small_model):
    assert_user_error(run("transform", small_model, "-o", tmp_path / "out", "--cuts", "nope"),
                      "not a cut point: nope", "/pool/MaxPool_output_0")


def test_unknown_strategy(tmp_path, small_model):
    assert_user_error(run("transform", small_model, "-o", tmp_path / "out", "--strategy", "magic"), "magic", "dbl")


def test_option_the_strategy_does_not_take(tmp_path, small_model):
    assert_user_error(run("transform", small_model, "-o", tmp_path / "out", "-s", "bp", "--blocks", "2"), "--blocks")


def test_cheaper_and_competitive_hebbian_options_reach_program_json(tmp_path, small_model):
    out = tmp_path / "out"
    result = run("transform", small_model, "-o", out, "-s", "local-sgd", "--prefix", "1", "--hebbian-rule", "sanger",
                 "--hebbian-subsample", "4", "--hebbian-every", "2")
    assert result.returncode == 0, result.stderr
    options = json.loads((out / "program.json").read_text())["options"]
    assert (options["hebbian_rule"], options["hebbian_subsample"], options["hebbian_every"]) == ("sanger", 4, 2)
    assert_user_error(run("transform", small_model, "-o", tmp_path / "bad", "-s", "local-sgd", "--hebbian-every", "0"),
                      "--hebbian-every")


def test_local_sgd_options_reach_program_json(tmp_path, small_model):
    out = tmp_path / "out"
    result = run("transform", small_model, "-o", out, "-s", "local-sgd", "--prefix", "1", "--learning-mode", "dynamic",
                 "--hebbian-rule", "hebb", "--hebbian-lr", "0.01")
    assert result.returncode == 0, result.stderr
    program = json.loads((out / "program.json").read_text())
    assert program["stages"][0]["kind"] == "hebbian" and program["stages"][0]["loss"] is None
    options = program["options"]
    assert (options["prefix"], options["learning_mode"], options["hebbian_rule"], options["hebbian_lr"]) == (
        1, "dynamic", "hebb", 0.01)
    # defaults resolved and recorded: the default maximum prefix holds at most half the forward MACs, and
    # the first segment (conv1, 16*16*8*27 = 55,296 of 55,296 + 8*8*8*72 + 8*10 = 92,240) is already more
    assert options["max_prefix"] == 0 and options["schedule"] == "linear"
    assert "blocks" not in options  # local-sgd refuses --blocks, so its program does not record one
    assert "oja rule" not in run("inspect", out).stdout and "hebb rule" in run("inspect", out).stdout
    assert run("verify", out).returncode == 0


def test_moving_policy_and_cheap_head_options_reach_program_json(tmp_path, small_model):
    out = tmp_path / "out"
    result = run("transform", small_model, "-o", out, "--blocks", "3", "--boundary-policy", "sliding",
                 "--settle-threshold", "0.8", "--aux-head", "conv", "--aux-width", "0.5", "--aux-pool", "2",
                 "--aux-subsample", "4")
    assert result.returncode == 0, result.stderr
    program = json.loads((out / "program.json").read_text())
    options = program["options"]
    assert (options["boundary_policy"], options["settle_threshold"], options["min_blocks"], options["aux_width"],
            options["aux_pool"], options["aux_subsample"]) == ("sliding", 0.8, 2, 0.5, 2, 4)
    assert "merge_gain" not in options  # sliding does not read it
    head = program["stages"][0]["head"]
    assert (head["width"], head["pool"], head["subsample"]) == (0.5, 2, 4)
    assert run("inspect", out).stdout.count("aux head trained on one sample in 4 of each batch") == 2
    assert run("verify", out).returncode == 0


SMALL_CNN_CUTS = "/pool/MaxPool_output_0,/fc/Flatten_output_0"  # a feature map, then a vector


def test_per_block_loss_weights_reach_program_json(tmp_path, small_model):
    out = tmp_path / "out"
    result = run("transform", small_model, "-o", out, "--cuts", SMALL_CNN_CUTS, "--boundary-policy", "fixed",
                 "--aux-loss", "ce+recon", "--aux-recon-weight", "6:1", "--aux-ce-weight", "0.5:2")
    assert result.returncode == 0, result.stderr
    program = json.loads((out / "program.json").read_text())
    assert (program["options"]["aux_recon_weight"], program["options"]["aux_ce_weight"]) == ("6:1", "0.5:2")
    first, second = (stage["head"] for stage in program["stages"][:2])
    assert (first["ce"], first["recon"]) == (0.5, 6.0)
    assert (second["ce"], "recon" in second) == (2.0, False)  # a vector: no reconstruction
    shown = run("inspect", out).stdout
    assert "loss: 0.5 x the head's cross-entropy + 6 x the error of the decoder's reconstruction of input" in shown
    assert "loss: 2 x the head's cross-entropy\n" in shown


@pytest.mark.parametrize("args, fragment", [
    (["--aux-ce-weight", "1:x"], "'1:x' is not a number or FIRST:LAST"),
    (["--aux-loss", "ce+recon", "--aux-recon-weight", "-1:2"], "--aux-recon-weight must be >= 0 at both ends"),
])  # the other refusals: tests/passes/test_reconstruction.py
def test_bad_loss_weights(tmp_path, small_model, args, fragment):
    assert_user_error(run("transform", small_model, "-o", tmp_path / "out", "--cuts", SMALL_CNN_CUTS, *args), fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, fragment", [
    (["-s", "dbl", "--prefix", "1"], "takes no --prefix"),
    (["-s", "local-sgd", "--prefix", "9"], "leaves no layer"),
    (["-s", "local-sgd", "--max-prefix", "9"], "--max-prefix 9"),
    (["-s", "local-sgd", "--blocks", "2"], "takes no --blocks"),
])
def test_hebbian_option_errors(tmp_path, small_model, args, fragment):
    assert_user_error(run("transform", small_model, "-o", tmp_path / "out", *args), fragment)


def test_existing_output_needs_force(tmp_path, small_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert_user_error(run("transform", small_model, "-o", out), "already exists", "--force")
    assert (out / "keep.txt").read_text() == "user data"
    assert run("transform", small_model, "-o", out, "--force", "--blocks", "2").returncode == 0
    assert (out / "program.json").exists() and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or backup dirs left


def test_export_refuses_overwrite(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_text("mine")
    assert_user_error(run("models", "export", "small_cnn", "-o", target), "already exists")
    assert target.read_text() == "mine"
    assert_user_error(run("models", "export", "resnet1000", "-o", tmp_path / "x.onnx"), "unknown model")


@pytest.mark.parametrize("args", [
    ["transform", "MODEL", "-o", "OUT", "--blocks", "0"],
    ["transform", "MODEL"],  # missing -o
    ["transform", "MODEL", "-o", "OUT", "--no-such-option"],
    ["transform", "MODEL", "-o", "OUT", "--cuts", ","],
    ["transform", "MODEL", "-o", "OUT", "--seed", "-5"],
    ["models", "export", "small_cnn", "-o", "OUT", "--input-shape", "3,32"],
    ["models", "export", "small_cnn", "-o", "OUT", "--mode", "dynamo", "--opset", "14"],
    ["inspect", "MODEL", "--format", "xml"],
    ["frobnicate"],
])
def test_usage_errors_are_one_line(tmp_path, small_model, args):
    args = [str(small_model) if a == "MODEL" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    assert_user_error(run(*args))
    assert not (tmp_path / "out").exists()


def test_output_path_under_a_file(tmp_path, small_model):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert_user_error(run("transform", small_model, "-o", blocker / "sub", "--blocks", "2"), "cannot write")
    assert_user_error(run("transform", small_model, "-o", blocker), "not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_working_directory_is_never_replaced(tmp_path, small_model):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("keep")
    assert_user_error(run("transform", small_model, "-o", ".", "--force", cwd=work), "working directory")
    assert (work / "mine.txt").read_text() == "keep"


def test_verify_static_batch_and_other_cwd(tmp_path):
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    model = export("small_cnn", tmp_path / "sb2.onnx", batch_size=2, input_shape=(3, 16, 16))
    assert run("transform", model, "-o", tmp_path / "prog", "--blocks", "2").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("verify", tmp_path / "prog", cwd=elsewhere)
    assert result.returncode == 0, result.stderr


def test_inspect_a_directory_that_is_neither_program_nor_run(tmp_path):
    assert_user_error(run("inspect", tmp_path), "neither a program (no program.json) nor a run (no run.json)",
                      "an ONNX model file, a program directory or a run directory")


@pytest.mark.parametrize("content, error", [
    ('{"format_version": 1}', "prog: damaged program directory (KeyError: 'eval_model')"),
    ("[1]", "prog: program format None is not supported"),
    ("not json", "prog: not a program directory"),
])
def test_damaged_program_directory(tmp_path, content, error):
    (tmp_path / "prog").mkdir()
    (tmp_path / "prog" / "program.json").write_text(content)
    assert_user_error(run("inspect", tmp_path / "prog"), error)
    assert_user_error(run("verify", tmp_path / "prog"), error)


def test_verify_against_a_model_of_another_input_size_is_a_user_error(tmp_path):
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    small, large = (export("small_cnn", tmp_path / f"s{size}.onnx", input_shape=(3, size, size)) for size in (16, 24))
    assert run("transform", small, "-o", tmp_path / "prog", "--blocks", "2").returncode == 0
    assert_user_error(run("verify", tmp_path / "prog", "--model", large), "onnxruntime cannot run",
                      "Got invalid dimensions for input")


def test_transform_help_is_the_declared_options():
    """Every transform option's flag, help, default, choices and range come from its declaration, and
    the default shown is the one the Python side applies."""
    import dataclasses

    from click.testing import CliRunner

    from llcompile.cli.commands import cli
    from llcompile.cli.spec_options import RampType
    from llcompile.compiler.options import TRANSFORM_OPTIONS
    from llcompile.policies.boundary_policy import SETTING_DEFAULTS, BoundaryPolicy
    from llcompile.policies.learning_mode import LearningMode
    from llcompile.util.option_names import cli_flag
    from llcompile.util.option_spec import option_specs
    from llcompile.util.ramp import Ramp

    help_text = " ".join(CliRunner().invoke(cli, ["transform", "--help"], terminal_width=400).output.split())
    params = {p.name: p for p in cli.commands["transform"].params}
    for option_class in TRANSFORM_OPTIONS:
        for name, spec in option_specs(option_class).items():
            param = params[name]
            assert cli_flag(name) in param.opts and param.help == spec.help_line()
            assert " ".join(spec.help_line().split()) in help_text, name
            if spec.choices is not None:
                assert tuple(param.type.choices) == spec.choices
            elif spec.kind is Ramp:  # its range is checked at each end on the Python side (test_bad_loss_weights)
                assert isinstance(param.type, RampType)
            elif spec.minimum is not None:
                assert (param.type.min, param.type.max, param.type.min_open, param.type.max_open) == \
                    (spec.minimum, spec.maximum, spec.min_open, spec.max_open)
    # the defaults shown are those the options resolve to
    for field in dataclasses.fields(LearningMode):
        shown = option_specs(LearningMode)[field.name].default
        assert shown == field.default, field.name
    adaptive = BoundaryPolicy("adaptive")
    for name, spec in option_specs(BoundaryPolicy).items():
        assert spec.default == (adaptive.setting(name) if name in SETTING_DEFAULTS else getattr(adaptive, name)), name
