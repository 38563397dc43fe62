"""Assemble the cost report: every program costed, compared with `bp`, as one JSON-ready dict.

The dict is the machine contract (schema in docs/cost-model.md); every renderer reads it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from llcompile.cost.cost_model import OPTIMIZER_SLOTS, ProgramCost, cost_program
from llcompile.report.programs import BASELINE, ReportInput, StrategySpec, resolve
from llcompile.cost.traffic import offchip_traffic
from llcompile.report.measured import attach_measured, cost_runs, read_run
from llcompile.frontend.importer import ModelSource
from llcompile.version import __version__

REPORT_VERSION = 1
DEFAULT_BATCH_SIZE = 128
DEFAULT_ONCHIP_KIB = 512

UNITS = {
    "macs": "multiply-accumulates per sample (one MAC = one multiply and one add; FLOPs = 2 x MACs)",
    "element_ops": "element operations per sample (BatchNormalization, activations, pooling, Add, loss, ...)",
    "bytes": "bytes per training step at batch_size, float32",
}


def build_report(source: ModelSource, specs: list[StrategySpec], flags: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, onchip_kib: int = DEFAULT_ONCHIP_KIB,
                 optimizer: str = "sgd", measured: Sequence[str | os.PathLike] = ()) -> dict:
    """The report of the model file, program directory or in-memory model ``source`` (``programs.resolve``),
    with the training runs in ``measured`` (``llcompile train``'s run directories) beside the
    strategies they trained, each such strategy costed too."""
    runs = [read_run(run_dir) for run_dir in measured]  # a bad run directory fails before the compile work
    resolved = resolve(source, specs, flags or {})
    return report_of(resolved, batch_size=batch_size, onchip_kib=onchip_kib, optimizer=optimizer, runs=runs)


def report_of(resolved: ReportInput, batch_size: int = DEFAULT_BATCH_SIZE, onchip_kib: int = DEFAULT_ONCHIP_KIB,
              optimizer: str = "sgd", runs: Sequence[dict] = ()) -> dict:
    """The report of ``resolved``'s programs, each run (``measured.read_run``) beside the program it
    trained (which is costed too when it is not among them)."""
    cost_runs(resolved, runs)
    onchip_bytes = onchip_kib * 1024
    strategies = {}
    for costed in resolved.programs:
        cost = cost_program(costed.program, batch_size=batch_size, optimizer=optimizer)
        strategies[costed.label] = strategy_entry(cost, onchip_bytes)
    baseline = strategies.get(BASELINE)
    for entry in strategies.values():
        entry["vs_bp"] = vs_baseline(entry, baseline) if baseline is not None else None
    a = resolved.analysis
    report = {
        "report_version": REPORT_VERSION,
        "llcompile_version": __version__,
        "source": {"path": resolved.source, "kind": resolved.kind},
        "model": {"input": a.input, "input_shape": a.input_shape, "output": a.output, "num_classes": a.num_classes,
                  "layers": len(a.layers), "segments": len(a.segments), "params": a.params,
                  "macs_forward": a.macs},
        "settings": {"batch_size": batch_size, "optimizer": optimizer, "optimizer_slots": OPTIMIZER_SLOTS[optimizer],
                     "onchip_kib": onchip_kib, "onchip_bytes": onchip_bytes, "dtype_bytes": 4},
        "units": UNITS,
        "notes": list(resolved.notes),
        "strategies": strategies,
    }
    attach_measured(report, runs)
    return report


def strategy_entry(cost: ProgramCost, onchip_bytes: int) -> dict:
    traffic = offchip_traffic(cost, onchip_bytes)
    macs = cost.macs()
    stages = []
    for stage, stage_traffic in zip(cost.stages, traffic["stages"]):
        stages.append({**stage.to_json(), "spilled_bytes": stage_traffic["spilled_bytes"],
                       "offchip_bytes": stage_traffic["activations"] + stage_traffic["handoff"]})
    return {
        "strategy": cost.strategy,
        "options": cost.options,
        "macs": macs,
        "flops_total": 2 * macs["total"],
        "element_ops": cost.element_ops(),
        "memory": {
            "params_bytes": cost.params_bytes,
            "buffers_bytes": cost.buffers_bytes,
            "grads_bytes": cost.grads_bytes,
            "optimizer_bytes": cost.optimizer_bytes,
            "hebbian_update_bytes": cost.hebbian_update_bytes,
            "activation_peak_bytes": cost.activation_peak_bytes,
            "activation_stage_bytes": [s.activation_bytes for s in cost.stages],
            "peak_bytes": cost.peak_bytes,
            "offchip_bytes": traffic["total"],
            "offchip": {k: traffic[k] for k in ("weights", "updates", "activations", "handoff")},
        },
        "stages": stages,
        "layers": [layer.to_json() for layer in cost.layers],
        "vs_bp": None,
        "measured": None,
    }


def vs_baseline(entry: dict, baseline: dict) -> dict:
    """Ratios strategy / bp (lower is cheaper), and the speed-up the MAC counts predict (bp / strategy)."""
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    return {
        "macs_total": ratio(entry["macs"]["total"], baseline["macs"]["total"]),
        "activation_peak_bytes": ratio(entry["memory"]["activation_peak_bytes"],
                                       baseline["memory"]["activation_peak_bytes"]),
        "offchip_bytes": ratio(entry["memory"]["offchip_bytes"], baseline["memory"]["offchip_bytes"]),
        "peak_bytes": ratio(entry["memory"]["peak_bytes"], baseline["memory"]["peak_bytes"]),
        "ideal_speedup": ratio(baseline["macs"]["total"], entry["macs"]["total"]),
    }
