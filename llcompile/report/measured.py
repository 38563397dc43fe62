"""Measured numbers of training runs (``llcompile train``'s RUN_DIR), put beside the prediction.

A run directory holds ``run.json`` (the program it trained, as ``program_json``, and the config:
batch size, backend, device) and ``metrics.jsonl`` (one record per epoch: ``epoch_time_s``,
``images_per_s``, ``peak_memory_mb``, ``test_acc``). Seconds per step are taken from the last epoch
(``batch_size / images_per_s``: the first epoch carries warm-up), test accuracy from the last
epoch; peak memory is the largest over the epochs. A run is matched to the report's strategy with
the same strategy name and options; a run of a strategy the report was not asked for is costed
too (``spec_of_run``), from the report's model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llcompile.compiler.options import TRANSFORM_OPTION_SPECS
from llcompile.compiler.strategies import get_strategy
from llcompile.errors import LLCompileError
from llcompile.report.programs import ReportInput, StrategySpec, add_program
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
        test_acc = None if last.get("test_acc") is None else float(last["test_acc"])
    except (IndexError, KeyError, TypeError, ValueError):
        raise LLCompileError(f"--measured {root}: {METRICS_FILE} has no complete epoch record") from None
    if images_per_s <= 0:
        raise LLCompileError(f"--measured {root}: images_per_s is {images_per_s}")
    return {"run_dir": os.fspath(root), "strategy": strategy, "options": options, "batch_size": batch_size,
            "backend": config.get("backend"), "device": config.get("device"), "epochs": len(records),
            "s_per_step": batch_size / images_per_s, "images_per_s": images_per_s,
            "peak_memory_bytes": int(peak_mb * 2**20), "test_acc": test_acc,
            "data": [config.get("data"), config.get("data_limit")],
            "parallel": (last.get("parallel") or {}).get("mode")}


def attach_measured(report: dict, runs: list[dict]) -> None:
    """Put each run (``read_run``) beside the strategy it trained (``strategies.<name>.measured``),
    with its ratios to bp's run: time and peak memory where both ran on the same device and backend,
    test accuracy (in points) where both trained on the same data for as many epochs."""
    batch_size = report["settings"]["batch_size"]
    strategies = report["strategies"]
    for run in runs:
        if run["batch_size"] != batch_size:
            raise LLCompileError(f"--measured {run['run_dir']}: trained at batch {run['batch_size']}, the report "
                                 f"predicts batch {batch_size}; pass --batch-size {run['batch_size']}")
        label = next(name for name, entry in strategies.items() if trained(entry["strategy"], entry["options"], run))
        if strategies[label]["measured"] is not None:
            raise LLCompileError(f"--measured {run['run_dir']}: {label} already has a measured run "
                                 f"({strategies[label]['measured']['run_dir']})")
        strategies[label]["measured"] = {**run, "predicted_peak_bytes": strategies[label]["memory"]["peak_bytes"]}
    baseline = strategies.get("bp", {}).get("measured")
    for entry in strategies.values():
        measured = entry["measured"]
        if measured is None:
            continue
        same_place = baseline is not None and (baseline["device"], baseline["backend"]) == (
            measured["device"], measured["backend"])
        same_budget = baseline is not None and (baseline["data"], baseline["epochs"]) == (
            measured["data"], measured["epochs"]) and None not in (baseline["test_acc"], measured["test_acc"])
        measured["s_per_step_vs_bp"] = measured["s_per_step"] / baseline["s_per_step"] if same_place else None
        measured["speedup_vs_bp"] = baseline["s_per_step"] / measured["s_per_step"] if same_place else None
        measured["peak_memory_vs_bp"] = (measured["peak_memory_bytes"] / baseline["peak_memory_bytes"]
                                         if same_place else None)
        measured["test_acc_vs_bp_points"] = (100 * (measured["test_acc"] - baseline["test_acc"])
                                             if same_budget else None)


def trained(strategy: str, options: dict, run: dict) -> bool:
    """Whether ``run`` trained the program of ``strategy`` with ``options``."""
    return strategy == run["strategy"] and _same(options, run["options"])


def cost_runs(resolved: ReportInput, runs: list[dict]) -> None:
    """Add to the report's programs the one each run trained where no strategy asked for is it,
    compiled from the report's model (a label taken already gets the run directory's name)."""
    for run in runs:
        if any(trained(p.program.strategy, p.program.options, run) for p in resolved.programs):
            continue
        spec = spec_of_run(run)
        taken = any(p.label == spec.label for p in resolved.programs)
        add_program(resolved, spec, f"{spec.label} ({Path(run['run_dir']).name})" if taken else None)


def spec_of_run(run: dict) -> StrategySpec:
    """The strategy a run trained, as a report asks for it: the options its program records that
    the strategy takes, those at their defaults left out (so a run of plain ``dbl`` is ``dbl``) and
    the number of blocks where the cuts say it."""
    takes = get_strategy(run["strategy"]).options
    options = {k: v for k, v in run["options"].items()
               if k in takes and v is not None and not (k in TRANSFORM_OPTION_SPECS
                                                        and v == TRANSFORM_OPTION_SPECS[k].default)}
    if "cuts" in options:  # the cuts are the blocks
        options.pop("blocks", None)
    return StrategySpec(run["strategy"], options)


def _same(a: dict, b: dict) -> bool:
    """The same value for every option both record (a program from an older llcompile may record
    fewer); a program whose learning mode grows the prefix matches at any prefix (the report costs
    it at its largest, which the run's last epochs train with)."""
    ignored = {"prefix"} if "max_prefix" in a and "max_prefix" in b else set()
    shared = (set(a) & set(b)) - ignored
    return all(json.dumps(a[k], sort_keys=True) == json.dumps(b[k], sort_keys=True) for k in shared)
