"""Hostile names through the command line: training runs nothing hidden in a node name, errors and
tables show control characters escaped, the HTML report shows markup as text."""

from __future__ import annotations

import onnx

from llcompile.report.programs import StrategySpec
from llcompile.report.render import render
from llcompile.report.report import build_report
from tests.fixtures import legacy_models as lm
from tests.fixtures.hostile_names import HOSTILE_NAMES, PAYLOAD_FILE, renamed
from tests.cli.test_commands import assert_user_error, run


def _saved(model: onnx.ModelProto, path) -> str:
    onnx.save_model(model, path)
    return path


def test_code_in_a_node_name_does_not_run_when_training(tmp_path):
    """The reported exploit: transform with bp, then train; the payload writes into the cwd."""
    work = tmp_path / "work"
    work.mkdir()
    model = _saved(renamed(lm.small_cnn(), HOSTILE_NAMES["newline_code"]), tmp_path / "evil.onnx")
    assert run("transform", model, "-o", tmp_path / "p", "--strategy", "bp", cwd=work).returncode == 0
    result = run("train", tmp_path / "p", "--data", "synthetic:64", "--epochs", "1", "--run-dir", tmp_path / "run",
                 cwd=work)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []  # no PAYLOAD_FILE, nothing else
    assert not (tmp_path / PAYLOAD_FILE).exists()


def test_control_characters_are_shown_not_sent(tmp_path):
    name = HOSTILE_NAMES["control"]
    model = _saved(renamed(lm.small_cnn(), name), tmp_path / "m.onnx")
    shown = run("inspect", model)
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\r" not in shown.stdout and "\\x1b[31mred" in shown.stdout
    result = run("transform", model, "-o", tmp_path / "p", "--cuts", "nope")  # the error lists the cut points
    assert_user_error(result, "valid cut points")
    assert "\x1b" not in result.stderr and "\\x1b[31mred" in result.stderr
    assert not (tmp_path / "p").exists()


def test_html_report_shows_markup_as_text(tmp_path):
    model = _saved(renamed(lm.small_cnn(), HOSTILE_NAMES["html"]), tmp_path / "m.onnx")
    html = render(build_report(model, [StrategySpec("bp"), StrategySpec("dbl", {"blocks": 2})]), "html")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_inspect_code_shows_each_stage_forward_with_names_escaped(tmp_path):
    model = _saved(renamed(lm.small_cnn(), HOSTILE_NAMES["control"]), tmp_path / "m.onnx")
    assert run("transform", model, "-o", tmp_path / "p", "--blocks", "2").returncode == 0
    shown = run("inspect", tmp_path / "p", "--code")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("def forward(self, input_0 : torch.Tensor, input_1 : torch.Tensor):") == 2
    assert "# Conv \\x1b[31mred" in shown.stdout and "\x1b" not in shown.stdout
    assert_user_error(run("inspect", model, "--code"), "needs a program directory")
