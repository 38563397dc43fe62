"""Render a report dict as an aligned text table, JSON, CSV or markdown."""

from __future__ import annotations

import csv
import io
import json

from llcompile.report.tables import Table, header_lines, report_tables, shape
from llcompile.util.terminal import printable_data

FORMATS = ("table", "json", "csv", "markdown", "html")

CSV_COLUMNS = ["strategy", "stage", "stage_kind", "index", "layer", "op", "mode", "output_shape", "params",
               "macs_forward", "macs_backward_dx", "macs_backward_dw", "macs_hebbian", "macs_total",
               "element_ops_forward", "element_ops_backward", "activation_bytes"]


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"


def render_csv(report: dict) -> str:
    """One row per layer per strategy; MACs and element ops per sample, bytes per step."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, entry in report["strategies"].items():
        kinds = {s["name"]: s["kind"] for s in entry["stages"]}
        for i, layer in enumerate(entry["layers"]):
            writer.writerow([name, layer["stage"], kinds[layer["stage"]], i, layer["name"], layer["op"], layer["mode"],
                             shape(layer["output_shape"]), layer["params"], layer["macs_forward"],
                             layer["macs_backward_dx"], layer["macs_backward_dw"], layer["macs_hebbian"],
                             layer["macs_total"], layer["element_ops_forward"], layer["element_ops_backward"],
                             layer["activation_bytes"]])
    return out.getvalue()


def render_text(report: dict, detail: str = "layers") -> str:
    report = printable_data(report)  # for a terminal: names with their control characters escaped
    lines = header_lines(report)
    for table in report_tables(report, detail):
        lines += ["", table.title, *_aligned(table), *(f"  {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


def _aligned(table: Table) -> list[str]:
    cells = [table.headers, *table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.headers))]
    numeric = [all(_is_number(row[i]) for row in table.rows) and table.rows for i in range(len(table.headers))]
    lines = []
    for row in cells:
        lines.append("  " + "  ".join(c.rjust(w) if num else c.ljust(w)
                                      for c, w, num in zip(row, widths, numeric)).rstrip())
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def _is_number(text: str) -> bool:
    return text == "-" or text.replace(",", "").replace(".", "").replace("-", "").isdigit()


def render_markdown(report: dict, detail: str = "layers", image: str | None = None) -> str:
    """Markdown tables; ``image``: the file name of the PNG written beside, linked at the top."""
    lines = ["# Cost report", "", *(f"{line}  " for line in header_lines(report))]
    if image:
        lines += ["", f"![MACs per layer, activation memory per stage, strategies side by side]({image})"]
    for table in report_tables(report, detail):
        lines += ["", f"## {table.title}", "", markdown_table(table)]
        lines += ["", *(f"{note}  " for note in table.notes)] if table.notes else []
    return "\n".join(lines) + "\n"


def markdown_table(table: Table) -> str:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if all(_is_number(r[i]) for r in table.rows) and table.rows else "---"
             for i in range(len(table.headers))]
    return "\n".join([row(table.headers), "|" + "|".join(align) + "|", *(row(r) for r in table.rows)])
