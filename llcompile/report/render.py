"""Pick the renderer for a format; write a report to a file (atomically, a PNG beside markdown)."""

from __future__ import annotations

from pathlib import Path

from llcompile.util.atomic import atomic_write, atomic_write_text
from llcompile.errors import LLCompileError
from llcompile.report.formats import render_csv, render_json, render_markdown, render_text


def render(report: dict, fmt: str, detail: str = "layers", image: str | None = None) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "markdown":
        return render_markdown(report, detail, image=image)
    if fmt == "html":
        from llcompile.report.html import render_html

        return render_html(report, detail)
    if fmt == "table":
        return render_text(report, detail)
    raise LLCompileError(f"unknown report format {fmt!r}")


def outputs_for(output: Path, fmt: str) -> list[Path]:
    """The files writing ``fmt`` to ``output`` creates."""
    return [output, output.with_suffix(".png")] if fmt == "markdown" else [output]


def write_outputs(report: dict, fmt: str, detail: str, output: Path) -> list[Path]:
    paths = outputs_for(output, fmt)
    try:
        if fmt == "markdown":
            from llcompile.report.plots import report_png

            png = report_png(report)
            atomic_write(paths[1], lambda f: f.write(png))
            text = render(report, fmt, detail, image=paths[1].name)
        else:
            text = render(report, fmt, detail)
        atomic_write_text(output, text)
    except OSError as exc:
        raise LLCompileError(f"cannot write {output}: {exc.strerror or exc}") from None
    return paths
