"""Measured numbers of training runs (``llcompile train``'s RUN_DIR), put beside the prediction.

A run directory holds ``run.json`` (the program it trained, as ``program_json``, and the config:
batch size, backend, device) and ``metrics.jsonl`` (one record per epoch: ``epoch_time_s``,
``images_per_s``, ``peak_memory_mb``). Seconds per step are taken from the last epoch
(``batch_size / images_per_s``: the first epoch carries warm-up); peak memory is the largest over
the epochs. A run is matched to the report's strategy with the same strategy name and options.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llcompile.errors import LLCompileError
from llcompile.util.paths import inside

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


def read_run(run_dir: str | os.PathLike) -> dict:
    """The measured facts of one run directory; a one-line LLCompileError for anything unusable."""
    root = Path(run_dir)
    if not root.is_dir():
        raise LLCompileError(f"--measured {root}: not a directory")
    try:
        run = json.loads(inside(root, RUN_FILE, "the run file").read_text())
        config = run["config"]
        program = json.loads(run["program_json"])
        batch_size = int(config["batch_size"])
        strategy, options = program["strategy"], program.get("options", {})
    except FileNotFoundError:
        raise LLCompileError(f"--measured {root}: no {RUN_FILE} (not a training run directory)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LLCompileError(f"--measured {root}: {RUN_FILE} is damaged ({type(exc).__name__}: {exc})") from None
    try:
        lines = inside(root, METRICS_FILE, "the metrics file").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        raise LLCompileError(f"--measured {root}: no {METRICS_FILE} (the run finished no epoch)") from None
    except (OSError, ValueError) as exc:
        raise LLCompileError(f"--measured {root}: {METRICS_FILE} is damaged ({exc})") from None
    try:
        last = records[-1]
        images_per_s = float(last["images_per_s"])
        peak_mb = max(float(r["peak_memory_mb"]) for r in records)
    except (IndexError, KeyError, TypeError, ValueError):
        raise LLCompileError(f"--measured {root}: {METRICS_FILE} has no complete epoch record") from None
    if images_per_s <= 0:
        raise LLCompileError(f"--measured {root}: images_per_s is {images_per_s}")
    return {"run_dir": os.fspath(root), "strategy": strategy, "options": options, "batch_size": batch_size,
            "backend": config.get("backend"), "device": config.get("device"), "epochs": len(records),
            "s_per_step": batch_size / images_per_s, "images_per_s": images_per_s,
            "peak_memory_bytes": int(peak_mb * 2**20), "parallel": (last.get("parallel") or {}).get("mode")}


def attach_measured(report: dict, run_dirs: list[str | os.PathLike]) -> None:
    """Put each run beside the strategy it trained (``strategies.<name>.measured``), with the ratios."""
    batch_size = report["settings"]["batch_size"]
    strategies = report["strategies"]
    for run_dir in run_dirs:
        run = read_run(run_dir)
        if run["batch_size"] != batch_size:
            raise LLCompileError(f"--measured {run['run_dir']}: trained at batch {run['batch_size']}, the report "
                                 f"predicts batch {batch_size}; pass --batch-size {run['batch_size']}")
        label = next((name for name, entry in strategies.items()
                      if entry["strategy"] == run["strategy"] and _same(entry["options"], run["options"])), None)
        if label is None:
            options = ",".join(f"{k}={v}" for k, v in run["options"].items())
            raise LLCompileError(f"--measured {run['run_dir']}: it trained {run['strategy']} ({options}), which is "
                                 f"not in this report; add --strategy {run['strategy']} with those options")
        if strategies[label]["measured"] is not None:
            raise LLCompileError(f"--measured {run['run_dir']}: {label} already has a measured run "
                                 f"({strategies[label]['measured']['run_dir']})")
        predicted = strategies[label]["memory"]["peak_bytes"]
        strategies[label]["measured"] = {**run, "predicted_peak_bytes": predicted,
                                         "peak_memory_ratio": run["peak_memory_bytes"] / predicted if predicted else None}
    baseline = strategies.get("bp", {}).get("measured")
    for entry in strategies.values():
        measured = entry["measured"]
        if measured is None:
            continue
        same_place = baseline is not None and (baseline["device"], baseline["backend"]) == (
            measured["device"], measured["backend"])
        measured["s_per_step_vs_bp"] = measured["s_per_step"] / baseline["s_per_step"] if same_place else None
        measured["speedup_vs_bp"] = baseline["s_per_step"] / measured["s_per_step"] if same_place else None
        measured["peak_memory_vs_bp"] = (measured["peak_memory_bytes"] / baseline["peak_memory_bytes"]
                                         if same_place else None)


def _same(a: dict, b: dict) -> bool:
    """The same value for every option both record (a program from an older llcompile may record
    fewer); a program whose learning mode grows the prefix matches at any prefix (the report costs
    it at its largest, which the run's last epochs train with)."""
    ignored = {"prefix"} if "max_prefix" in a and "max_prefix" in b else set()
    shared = (set(a) & set(b)) - ignored
    return all(json.dumps(a[k], sort_keys=True) == json.dumps(b[k], sort_keys=True) for k in shared)
