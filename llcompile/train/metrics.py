"""Per-epoch metrics: one JSON object per line in metrics.jsonl, the same flattened in metrics.csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from llcompile.util.atomic import atomic_write_text


def flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Rewrite both files from the full history (a resumed run rewrites what it continues)."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(record) + "\n" for record in history))
    rows = [flatten(record) for record in history]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "metrics.csv", table.getvalue())
