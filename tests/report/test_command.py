"""`llcompile report`: every format renders and parses, the JSON contract's names, a program directory
as input, --measured, and one-line errors with exit code 2."""

import csv
import io
import json
import sys

import pytest

import llcompile
from llcompile.cli import main

SPECS = ["-s", "dbl:cuts=u1.out", "-s", "local-sgd:prefix=1"]
LABELS = ["bp", "dbl:cuts=u1.out", "local-sgd:prefix=1"]


def run(monkeypatch, capsys, *args):
    """(exit code, stdout, stderr) of ``llcompile ARGS`` run in this process through the real ``main``."""
    monkeypatch.setattr(sys, "argv", ["llcompile", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def user_error(result, *fragments):
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_json_contract(tiny_model, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--batch-size", "2", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert list(report["strategies"]) == LABELS
    assert report["settings"]["batch_size"] == 2 and report["settings"]["onchip_kib"] == 512
    for name, entry in report["strategies"].items():
        assert set(entry["macs"]) >= {"forward", "backward", "hebbian", "aux", "total", "backward_dx", "backward_dw"}
        assert set(entry["memory"]) >= {"params_bytes", "grads_bytes", "optimizer_bytes", "activation_peak_bytes",
                                        "offchip_bytes", "peak_bytes"}
        assert set(entry["vs_bp"]) >= {"macs_total", "activation_peak_bytes", "offchip_bytes", "ideal_speedup"}
        assert len(entry["layers"]) == 3
        for layer in entry["layers"]:
            assert set(layer) >= {"name", "op", "stage", "output_shape", "params", "macs_forward", "macs_backward_dx",
                                  "macs_backward_dw", "macs_hebbian", "element_ops_forward", "element_ops_backward",
                                  "activation_bytes"}
        assert entry["macs"]["total"] == (entry["macs"]["forward"] + entry["macs"]["backward"]
                                          + entry["macs"]["hebbian"] + entry["macs"]["aux"])
    bp, dbl, local = (report["strategies"][n] for n in LABELS)
    assert bp["vs_bp"] == {"macs_total": 1.0, "activation_peak_bytes": 1.0, "offchip_bytes": 1.0, "peak_bytes": 1.0,
                           "ideal_speedup": 1.0}
    assert bp["macs"]["total"] == 27888 and dbl["macs"]["aux"] == 120 and local["macs"]["hebbian"] == 6912
    assert dbl["vs_bp"]["ideal_speedup"] == pytest.approx(27888 / dbl["macs"]["total"])
    assert local["stages"][0]["kind"] == "hebbian" and local["memory"]["activation_stage_bytes"][0] == 0


def test_csv_table_markdown_html(tiny_model, tmp_path, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 * 3 and [r["strategy"] for r in rows[::3]] == LABELS
    assert {r["layer"] for r in rows} == {"u0.conv", "u2.conv", "head.fc"}
    assert int(rows[0]["macs_forward"]) == 6912

    code, out, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS)
    assert code == 0, err
    assert "total FLOPs" in out and "FLOPs = 2 x MACs" in out and "local-sgd:prefix=1: layers" in out

    md = tmp_path / "cost.md"
    code, _, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "markdown", "-o", md)
    assert code == 0, err
    assert md.read_text().startswith("# Cost report") and "](cost.png)" in md.read_text()
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page = tmp_path / "cost.html"
    code, _, err = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "html", "-o", page,
                       "--detail", "summary")
    assert code == 0, err
    html = page.read_text()
    assert "<img" in html and "data:image/png;base64," in html and "<table>" in html

    user_error(run(monkeypatch, capsys, "report", tiny_model, "--format", "html", "-o", page), "already exists",
               "--force")
    assert run(monkeypatch, capsys, "report", tiny_model, "--format", "html", "-o", page, "--force")[0] == 0


def test_program_directory(tiny_model, tmp_path, monkeypatch, capsys):
    llcompile.transform(tiny_model, "dbl", cuts=["u1.out"]).save(tmp_path / "prog")
    code, out, err = run(monkeypatch, capsys, "report", tmp_path / "prog", "-s", "local-sgd:prefix=1",
                         "--format", "json")
    assert code == 0, err
    from_dir = json.loads(out)
    assert from_dir["source"]["kind"] == "program" and list(from_dir["strategies"]) == ["bp", "dbl", "local-sgd:prefix=1"]
    code, out, _ = run(monkeypatch, capsys, "report", tiny_model, *SPECS, "--format", "json")
    from_model = json.loads(out)["strategies"]
    for dir_name, model_name in [("bp", "bp"), ("dbl", "dbl:cuts=u1.out"), ("local-sgd:prefix=1",) * 2]:
        assert from_dir["strategies"][dir_name]["macs"] == from_model[model_name]["macs"]
        assert from_dir["strategies"][dir_name]["memory"] == from_model[model_name]["memory"]


def test_default_prefix_is_half_the_segments(tiny_model, monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "-s", "local-sgd", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert "local-sgd:prefix=1" in report["strategies"]  # 3 segments
    assert any("first 1 of 3 segments (half)" in note for note in report["notes"])


def test_measured_run(tiny_model, tmp_path, monkeypatch, capsys):
    from llcompile.backends.base import OptimizerConfig
    from llcompile.train import TrainConfig, train

    llcompile.transform(tiny_model, "bp").save(tmp_path / "prog")
    config = TrainConfig(data="synthetic:32", epochs=1, batch_size=8, optimizer=OptimizerConfig())
    train(tmp_path / "prog", config, tmp_path / "run", show_progress=False)
    code, out, err = run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured",
                         tmp_path / "run", "--format", "json")
    assert code == 0, err
    measured = json.loads(out)["strategies"]["bp"]["measured"]
    assert measured["s_per_step"] > 0 and measured["peak_memory_bytes"] > 0 and measured["speedup_vs_bp"] == 1.0
    assert measured["peak_memory_ratio"] == pytest.approx(measured["peak_memory_bytes"] / measured["predicted_peak_bytes"])
    code, out, _ = run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured", tmp_path / "run")
    assert code == 0 and "Measured (training runs) next to predicted" in out
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--measured", tmp_path / "run"),
               "trained at batch 8", "--batch-size 8")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--batch-size", "8", "--measured", tmp_path / "prog"),
               "no run.json")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--measured", tmp_path / "nothing"), "not a directory")


def test_errors_are_one_line(tiny_model, tmp_path, monkeypatch, capsys):
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "nope"), "unknown strategy 'nope'")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:blocks=x"), "blocks must be an integer")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:colour=red"), "takes no option 'colour'")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--blocks", "2"), "--blocks applies to none")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-s", "dbl:blocks=9"))
    user_error(run(monkeypatch, capsys, "report", tmp_path / "missing.onnx"), "no such file")
    user_error(run(monkeypatch, capsys, "report", tmp_path), "not a program directory")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "--format", "pdf"), "pdf")
    user_error(run(monkeypatch, capsys, "report", tiny_model, "-o", tmp_path / "no" / "such" / "dir.json"),
               "no such directory")
