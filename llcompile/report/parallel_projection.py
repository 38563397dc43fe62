"""Projected training throughput on N workers: the cost model's figures, not a measurement.

Three ways to train on N workers joined by point-to-point links of ``link_gbps`` gigabits per second
(formulas in docs/cost-model.md, "Parallel projection"):

- ``dbl_stages``: dbl with K = N blocks (at most one per segment), one block per worker, activations
  sent forward only. The segments are grouped into consecutive blocks that minimise the slowest
  block's time (compute + sending its output); in steady state every worker runs its block on a new
  batch each step, so a step takes the slowest block's time, with no bubble.
- ``gpipe_bp``: backprop split the same way into p = N stages (GPipe or 1F1B: the same time), the
  batch in m micro-batches: a step takes (m + p - 1) micro-batch slots of the slowest stage, whose
  time includes sending its output forward and the gradient of its input backward.
- ``ddp_bp``: the whole model on every worker, the batch split over them, the gradients summed by a
  ring all-reduce of 2 (N - 1) / N x the gradient bytes per step; once after the backward pass
  (``step_s``), and fully overlapped with the backward pass (``step_s_overlapped``).

A stage's compute time is ``batch x its training MACs per sample / mac_rate``: one MAC/s rate per
worker for everything (element ops, the optimizer and the framework are inside the rate only when it
is calibrated from a measured run). Labels (8 bytes a sample) are not counted as traffic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from llcompile.analysis.structure import ModelAnalysis, Segment
from llcompile.errors import LLCompileError
from llcompile.passes.partition import min_max_partition
from llcompile.ops.registry import FLOAT_BYTES
from llcompile.cost.cost_model import cost_program
from llcompile.report.programs import BASELINE

DEFAULT_LINK_GBPS = 10.0  # 10 Gigabit Ethernet
# MAC/s of one worker when neither --mac-rate nor a measured run gives one: the effective rate of one
# core of the development machine training ResNet-20 with bp in one thread (docs/cost-model.md)
DEFAULT_MAC_RATE = 6.7e9
MICRO_BATCHES_PER_STAGE = 4  # the default m = 4 x p (GPipe's guideline m >= 4p)


@dataclass
class ProjectionSettings:
    workers: list[int]
    link_gbps: float = DEFAULT_LINK_GBPS
    mac_rate: float | None = None  # MAC/s per worker; None: calibrated from a measured run, else the default
    micro_batches: int | None = None  # gpipe_bp; None: 4 x stages, at most the batch
    dbl_options: dict | None = None  # transform options of the dbl programs (aux head, ...), besides the cuts


def attach_projection(report: dict, model: ir.Model, analysis: ModelAnalysis, settings: ProjectionSettings) -> None:
    """Add ``report["parallel_projection"]`` for ``model`` (the report's canonical model)."""
    if any(n < 1 for n in settings.workers):
        raise LLCompileError("--workers: every worker count must be >= 1")
    if settings.link_gbps <= 0:
        raise LLCompileError("--link-gbps must be > 0")
    rate, rate_source = mac_rate_of(report, settings.mac_rate)
    batch = report["settings"]["batch_size"]
    bp = report["strategies"][BASELINE]
    segment_macs = segment_training_macs(bp["layers"], analysis)
    link = settings.link_gbps * 1e9 / 8
    boundary = [segment_output_bytes(s) * batch / link for s in analysis.segments]
    compute = [batch * macs / rate for macs in segment_macs]

    def dbl_program_macs(cuts: list[str]) -> list[int]:
        from llcompile.compiler.transform import transform

        options = {**(settings.dbl_options or {}), "cuts": cuts, "blocks": None}
        program = transform(model, "dbl", **options)
        return [stage.macs()["total"] for stage in cost_program(program, batch_size=batch).stages]

    one_worker_bp = batch * bp["macs"]["total"] / rate
    rows = []
    for n in settings.workers:
        rows.append(dbl_stages(n, compute, boundary, analysis.segments, dbl_program_macs, batch, rate, one_worker_bp))
        rows.append(gpipe_bp(n, compute, boundary, analysis.segments, batch, settings.micro_batches, one_worker_bp))
        rows.append(ddp_bp(n, bp, batch, rate, link, one_worker_bp))
    report["parallel_projection"] = {
        "modelled": True,
        "settings": {"workers": list(settings.workers), "link_gbps": settings.link_gbps, "link_bytes_per_s": link,
                     "mac_rate": rate, "mac_rate_source": rate_source, "batch_size": batch,
                     "micro_batches": settings.micro_batches},
        "one_worker_bp": {"step_s": one_worker_bp, "images_per_s": batch / one_worker_bp},
        "rows": rows,
    }


def mac_rate_of(report: dict, given: float | None) -> tuple[float, str]:
    """MAC/s per worker and where it comes from: given; the measured single-process bp run (else the
    first single-process run): its strategy's MACs per step / its seconds per step; else the default."""
    if given is not None:
        if given <= 0:
            raise LLCompileError("--mac-rate must be > 0")
        return given, "given (--mac-rate)"
    measured = [(name, e) for name, e in report["strategies"].items()
                if e["measured"] and not e["measured"].get("parallel")]
    measured.sort(key=lambda item: item[0] != BASELINE)
    if measured:
        name, entry = measured[0]
        run = entry["measured"]
        rate = entry["macs"]["total"] * run["batch_size"] / run["s_per_step"]
        return rate, f"calibrated from {run['run_dir']} ({name}, last epoch: training MACs per step / s per step)"
    return DEFAULT_MAC_RATE, "default (docs/cost-model.md)"


def segment_training_macs(layers: list[dict], analysis: ModelAnalysis) -> list[int]:
    """bp's training MACs per sample (forward + dX + dW) of each segment, from the bp report's layers."""
    segment_of = {layer.name: layer.segment for layer in analysis.layers}
    totals = [0] * len(analysis.segments)
    for layer in layers:
        totals[segment_of[layer["name"]]] += layer["macs_total"]
    return totals


def segment_output_bytes(segment: Segment) -> int:
    """Bytes per sample of the activation a segment hands to the next (float32)."""
    return math.prod(segment.output_shape[1:]) * FLOAT_BYTES


def dbl_stages(workers: int, compute: list[float], boundary: list[float], segments: list[Segment],
               program_macs: Callable[[list[str]], list[int]], batch: int, rate: float,
               one_worker_bp: float) -> dict:
    """One dbl block per worker; the step is the slowest block's compute + send of its output."""
    stages = min(workers, len(segments))
    last = len(segments) - 1
    groups = min_max_partition(len(segments), stages, lambda a, b: sum(compute[a:b + 1]) + (
        boundary[b] if b < last else 0.0))
    cuts = [segments[a].input for a, _ in groups[1:]]
    stage_compute = [batch * macs / rate for macs in program_macs(cuts)]
    send = [boundary[b] if b < last else 0.0 for _, b in groups]
    step = max(c + s for c, s in zip(stage_compute, send))
    one_worker = sum(stage_compute)
    return _row("dbl_stages", workers, groups, cuts, stage_compute, send, step, batch, one_worker, one_worker_bp,
                bubble=0.0, micro_batches=None)


def gpipe_bp(workers: int, compute: list[float], boundary: list[float], segments: list[Segment], batch: int,
             micro_batches: int | None, one_worker_bp: float) -> dict:
    """bp in p = N stages, m micro-batches: a step is (m + p - 1) slots of the slowest stage's
    micro-batch time (compute + its output forward + its input's gradient backward)."""
    stages = min(workers, len(segments))
    last = len(segments) - 1
    m = min(micro_batches or MICRO_BATCHES_PER_STAGE * stages, batch)

    def traffic(a: int, b: int) -> float:
        return (boundary[b] if b < last else 0.0) + (boundary[a - 1] if a > 0 else 0.0)

    groups = min_max_partition(len(segments), stages, lambda a, b: sum(compute[a:b + 1]) + traffic(a, b))
    stage_compute = [sum(compute[a:b + 1]) for a, b in groups]
    send = [traffic(a, b) for a, b in groups]
    slowest = max(c + s for c, s in zip(stage_compute, send))
    step = slowest * (m + stages - 1) / m
    return _row("gpipe_bp", workers, groups, [segments[a].input for a, _ in groups[1:]], stage_compute, send, step,
                batch, one_worker_bp, one_worker_bp, bubble=(stages - 1) / (m + stages - 1), micro_batches=m)


def ddp_bp(workers: int, bp: dict, batch: int, rate: float, link: float, one_worker_bp: float) -> dict:
    """The whole bp model per worker, the batch split over the workers (B / N each); ring all-reduce of
    the gradients after the backward (``step_s``) or hidden behind it as far as it lasts
    (``step_s_overlapped``)."""
    forward = batch / workers * bp["macs"]["forward"] / rate
    backward = batch / workers * (bp["macs"]["total"] - bp["macs"]["forward"]) / rate
    allreduce = 2 * (workers - 1) / workers * bp["memory"]["grads_bytes"] / link
    step = forward + backward + allreduce
    overlapped = forward + max(backward, allreduce)
    return {"scheme": "ddp_bp", "workers": workers, "stages": 1, "segments_per_stage": None, "cuts": [],
            "micro_batches": None, "stage_compute_s": [forward + backward], "stage_send_s": [allreduce],
            "bubble": 0.0, "step_s": step, "images_per_step": batch, "images_per_s": batch / step,
            "speedup_vs_bp_1_worker": one_worker_bp / step, "efficiency": one_worker_bp / step / workers,
            "step_s_overlapped": overlapped, "images_per_s_overlapped": batch / overlapped,
            "speedup_vs_bp_1_worker_overlapped": one_worker_bp / overlapped,
            "efficiency_overlapped": one_worker_bp / overlapped / workers}


def _row(scheme: str, workers: int, groups: list[tuple[int, int]], cuts: list[str], stage_compute: list[float],
         send: list[float], step: float, batch: int, one_worker: float, one_worker_bp: float, bubble: float,
         micro_batches: int | None) -> dict:
    """``efficiency``: the speed-up over the same program on one worker, per worker."""
    return {"scheme": scheme, "workers": workers, "stages": len(groups),
            "segments_per_stage": [b - a + 1 for a, b in groups], "cuts": cuts, "micro_batches": micro_batches,
            "stage_compute_s": stage_compute, "stage_send_s": send, "bubble": bubble, "step_s": step,
            "images_per_step": batch, "images_per_s": batch / step,
            "speedup_vs_bp_1_worker": one_worker_bp / step, "efficiency": one_worker / step / workers}
