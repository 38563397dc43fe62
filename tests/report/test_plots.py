"""The report's figure says what it shows: layer names on the per-layer axis, a legend entry for
every colour, the aux heads' MACs in each panel's title, and, when runs are attached, test accuracy
against each cost at the values the report holds. The last test looks at the HTML page in a real
browser (headless Chromium, where installed)."""

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest

from llcompile.report.plots import KINDS, report_figure, short_layer_name
from llcompile.report.programs import parse_spec, resolve
from llcompile.report.render import render
from llcompile.report.report import report_of


def run(strategy: str, options: dict, test_acc: float, s_per_step: float, peak_mib: int) -> dict:
    """A run as ``measured.read_run`` gives it, with known figures."""
    return {"run_dir": f"runs/{strategy}", "strategy": strategy, "options": options, "batch_size": 8,
            "backend": "torch", "device": "cpu", "epochs": 3, "s_per_step": s_per_step,
            "images_per_s": 8 / s_per_step, "peak_memory_bytes": peak_mib * 2**20, "test_acc": test_acc,
            "data": ["digits", None], "parallel": None}


@pytest.fixture
def report(tiny_model):
    resolved = resolve(tiny_model, [parse_spec("dbl:cuts=u1.out")], {})
    runs = [run("bp", {}, 0.75, 0.02, 400), run("dbl", {"cuts": ["u1.out"]}, 0.7, 0.01, 300)]
    return report_of(resolved, batch_size=8, runs=runs)


def test_short_layer_names():
    assert short_layer_name("/stages/layer1/layer1.0/conv1/conv/Conv") == "stages/layer1.0/conv1/conv"
    assert short_layer_name("/stem/conv/Conv") == "stem/conv"
    assert short_layer_name("u0.conv") == "u0.conv"
    long = short_layer_name("/a_very_long_module_name/another_long_name/conv/Conv")
    assert len(long) == 28 and long.startswith("…") and long.endswith("another_long_name/conv")


def test_axes_are_named_and_every_colour_has_a_legend_entry(report):
    fig = report_figure(report)
    names = list(report["strategies"])
    per_layer = fig.axes[:len(names)]
    layers = report["strategies"]["bp"]["layers"]
    assert [t.get_text() for t in per_layer[-1].get_xticklabels()] == [short_layer_name(x["name"]) for x in layers]
    assert all(ax.get_ylabel() == "M MACs" for ax in per_layer)
    aux = report["strategies"]["dbl:cuts=u1.out"]["macs"]["aux"] / 1e6
    assert f"aux heads {aux:,.3f} M in all" in per_layer[1].get_title(loc="left")
    assert "aux heads" not in per_layer[0].get_title(loc="left")  # bp has none
    kinds = [t.get_text() for t in fig.legends[0].get_texts()]
    assert kinds == [label for label, _, _ in KINDS] + ["aux head (forward + backward, on its stage's last layer)"]
    memory = fig.axes[len(names) + 1]
    assert [t.get_text() for t in memory.get_legend().get_texts()] == ["stage 1", "stage 2", "peak"]


def test_accuracy_against_cost_at_the_reports_values(report):
    fig = report_figure(report)
    panels = fig.axes[-4:]
    strategies = report["strategies"]
    costs = [lambda e: e["measured"]["s_per_step"], lambda e: e["measured"]["peak_memory_bytes"] / 2**20,
             lambda e: e["macs"]["total"] / 1e6, lambda e: e["memory"]["activation_peak_bytes"] / 2**20]
    for ax, cost in zip(panels, costs):
        assert ax.get_ylabel() == "test accuracy (last epoch)" and ax.get_xlabel()
        points = [tuple(c.get_offsets()[0]) for c in ax.collections]
        assert points == [pytest.approx((cost(e), e["measured"]["test_acc"])) for e in strategies.values()]
    assert points[0][1] == 0.75 and panels[0].collections[0].get_label() == "bp"
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == list(strategies)


def test_no_accuracy_panels_without_runs(tiny_model):
    resolved = resolve(tiny_model, [parse_spec("dbl:cuts=u1.out")], {})
    assert len(report_figure(report_of(resolved, batch_size=8)).axes) == 2 + 2  # per strategy; totals, memory


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on PATH (apt install chromium)")
def test_the_html_page_in_a_browser_shows_the_figure_as_drawn(report, tmp_path):
    """Headless Chromium renders the page; its screenshot holds the report's figure pixel for pixel
    (not scaled, not a broken-image icon), and the tables below it."""
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render(report, "html", "layers"))
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--force-device-scale-factor=1", "--window-size=1400,4000", f"--screenshot={shot}",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    png = base64.b64decode(re.search(r"base64,([^']+)'", page.read_text()).group(1))
    figure = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    screen = np.asarray(Image.open(shot).convert("RGB"))
    h, w, _ = figure.shape
    left = 32  # the body's 2em margin
    drawn = next(r for r in range(h) if (figure[r] != figure[r, 0]).any())  # the first row not blank
    top = next(y - drawn for y in range(drawn, screen.shape[0] - h + drawn)
               if np.array_equal(screen[y, left:left + w], figure[drawn]))
    assert np.array_equal(screen[top:top + h, left:left + w], figure)
    below = screen[top + h:]
    assert (below < 128).any(axis=2).any(axis=1).sum() > 100  # rows of table text under the figure
