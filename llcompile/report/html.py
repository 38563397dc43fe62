"""Render a report as one self-contained HTML page: the tables and the figure, embedded as base64 PNG."""

from __future__ import annotations

import base64
from html import escape

from llcompile.report.plots import report_png
from llcompile.report.tables import Table, header_lines, report_tables

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { font-size: 12px; color: #555; margin: 0.2em 0; }
img { max-width: 100%; }
"""


def render_html(report: dict, detail: str = "layers") -> str:
    png = base64.b64encode(report_png(report)).decode("ascii")
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>llcompile cost report</title>",
             f"<style>{STYLE}</style></head><body>", "<h1>Cost report</h1>"]
    parts += [f"<p>{escape(line)}</p>" for line in header_lines(report)]
    parts.append(f"<img alt='MACs per layer, activation memory per stage, strategies side by side' "
                 f"src='data:image/png;base64,{png}'>")
    for table in report_tables(report, detail):
        parts += [f"<h2>{escape(table.title)}</h2>", _table(table)]
        parts += [f"<p class='note'>{escape(note)}</p>" for note in table.notes]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _table(table: Table) -> str:
    numeric = [bool(table.rows) and all(_is_number(r[i]) for r in table.rows) for i in range(len(table.headers))]
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td class='num'>{escape(c)}</td>" if num else f"<td>{escape(c)}</td>"
                                    for c, num in zip(row, numeric)) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _is_number(text: str) -> bool:
    return text == "-" or text.replace(",", "").replace(".", "").replace("-", "").isdigit()
