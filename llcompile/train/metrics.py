"""Per-epoch metrics: one JSON object per line in metrics.jsonl, the same flattened in metrics.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path


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
    jsonl = "".join(json.dumps(record) + "\n" for record in history)
    (run_dir / "metrics.jsonl").write_text(jsonl)
    rows = [flatten(record) for record in history]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
