"""The human-readable content of a report: titled tables built from the report dict.

The text, markdown and html renderers all draw these same tables, so they show the same numbers.
MACs are in millions per sample (M), FLOPs are labelled as FLOPs, bytes in MiB per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DETAILS = ("summary", "stages", "layers")


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def millions(n: int | float) -> str:
    return f"{n / 1e6:,.3f}"


def mib(n: int | float) -> str:
    return f"{n / 2**20:,.2f}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def shape(dims: list) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def header_lines(report: dict) -> list[str]:
    s, m, source = report["settings"], report["model"], report["source"]
    lines = [
        f"cost report: {source['path'] or 'a model in memory'} ({source['kind']}); {m['layers']} layers, "
        f"{m['segments']} segments, {m['params']:,} parameters, {millions(m['macs_forward'])} M forward MACs per sample",
        f"batch {s['batch_size']}, optimizer {s['optimizer']} ({s['optimizer_slots']} state slot(s) per parameter), "
        f"on-chip buffer {s['onchip_kib']:,} KiB, float32",
        "MACs per sample in millions (M); one MAC = one multiply-accumulate, FLOPs = 2 x MACs. "
        "Element ops (BN, activations, pooling, Add, loss) counted apart. Bytes per training step, in MiB.",
    ]
    lines += [f"note: {note}" for note in report["notes"]]
    return lines


def summary_tables(report: dict) -> list[Table]:
    rows, memory_rows = [], []
    for name, e in report["strategies"].items():
        m, mem, vs = e["macs"], e["memory"], e["vs_bp"] or {}
        rows.append([name, millions(m["forward"]), millions(m["backward_dx"]), millions(m["backward_dw"]),
                     millions(m["hebbian"]), millions(m["aux"]), millions(m["total"]), millions(e["flops_total"]),
                     millions(e["element_ops"]["total"]), ratio(vs.get("macs_total")), ratio(vs.get("ideal_speedup"))])
        memory_rows.append([name, mib(mem["params_bytes"]), mib(mem["grads_bytes"]), mib(mem["optimizer_bytes"]),
                            mib(mem["hebbian_update_bytes"]), mib(mem["activation_peak_bytes"]), mib(mem["peak_bytes"]),
                            mib(mem["offchip_bytes"]), ratio(vs.get("activation_peak_bytes")),
                            ratio(vs.get("offchip_bytes"))])
    tables = [
        Table("MACs per strategy (millions per sample)",
              ["strategy", "forward", "bwd dX", "bwd dW", "Hebbian", "aux", "total MACs", "total FLOPs",
               "elem ops", "MACs / bp", "ideal speed-up"], rows),
        Table("Memory and off-chip traffic per strategy (MiB per step)",
              ["strategy", "params", "grads", "optim.", "Hebbian new W", "act. peak", "peak total", "off-chip",
               "act. peak / bp", "off-chip / bp"], memory_rows,
              ["act. peak: the largest stage's activations kept for its backward pass; peak total adds params, "
               "BN buffers, gradients and optimizer state; off-chip: weights + updates + spilled activations "
               "+ stage hand-offs (docs/cost-model.md).", *offchip_notes(report)]),
    ]
    if any(e["measured"] for e in report["strategies"].values()):
        tables.insert(0, tradeoff_table(report))  # what a strategy gains and loses comes first
    return tables


def tradeoff_table(report: dict) -> Table:
    """What each measured strategy gains and loses against bp: its test accuracy beside its measured
    time and memory and its modelled MACs and activation peak."""
    rows = []
    for name, e in report["strategies"].items():
        r, vs = e["measured"], e["vs_bp"] or {}
        if r is None:
            continue
        acc = "-" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        points = r["test_acc_vs_bp_points"]
        rows.append([name, f"{r['backend']}/{r['device']}", str(r["epochs"]), acc,
                     "-" if points is None else f"{points:+.1f}", f"{r['s_per_step']:.4f}",
                     ratio(r["s_per_step_vs_bp"]), mib(r["peak_memory_bytes"]), ratio(r["peak_memory_vs_bp"]),
                     ratio(vs.get("macs_total")), ratio(vs.get("activation_peak_bytes")),
                     mib(r["predicted_peak_bytes"])])
    return Table(
        "Accuracy against cost: training runs (measured) beside the cost model",
        ["strategy", "backend/device", "epochs", "test acc", "vs bp (points)", "s/step", "time / bp",
         "peak MiB (process)", "peak / bp", "MACs / bp (model)", "act. peak / bp (model)",
         "training state MiB (model)"], rows,
        ["Measured: test accuracy after the last epoch; s/step from the last epoch (batch / images per second); "
         "peak MiB is the whole process's resident set on CPU (interpreter, runtime, data and libraries "
         "included) and torch's allocator peak on CUDA. Model: training state = parameters, BN buffers, "
         "gradients, optimizer state and the largest stage's kept activations, at this batch. The two "
         "memory figures count different things and are not divided. vs bp: only runs on the same "
         "device and backend (time, memory), the same data and epochs (accuracy); '-' otherwise."])


def offchip_notes(report: dict) -> list[str]:
    """Where a strategy moves more off-chip bytes than bp: the parts that make the difference, beside
    the ratio that shows it."""
    onchip = report["settings"]["onchip_kib"]
    bp = report["strategies"].get("bp")
    notes = []
    for name, e in report["strategies"].items():
        share = (e["vs_bp"] or {}).get("offchip_bytes")
        if bp is None or share is None or share <= 1:
            continue
        parts = [(what, e["memory"]["offchip"][key], bp["memory"]["offchip"][key])
                 for what, key in (("spilled activations", "activations"), ("stage hand-offs", "handoff"))]
        own, base = e["memory"]["offchip"], bp["memory"]["offchip"]
        parts.insert(0, ("weights + updates", own["weights"] + own["updates"], base["weights"] + base["updates"]))
        notes.append(f"{name} moves {share:.3f} x bp's off-chip bytes at {onchip:,} KiB on chip: "
                     + ", ".join(f"{what} {mib(value)} (bp {mib(bp_value)})" for what, value, bp_value in parts)
                     + " MiB: a stage's kept activations spill where they do not fit on chip, as bp's do, and "
                       "every stage boundary adds a hand-off; blocks save traffic only where their activations "
                       "fit and bp's do not (docs/cost-model.md, Off-chip traffic).")
    return notes


def stage_table(name: str, entry: dict) -> Table:
    rows = []
    for s in entry["stages"]:
        m = s["macs"]
        head = s["head"]["kind"] if s["head"] else "-"
        rows.append([s["name"], s["kind"], str(len(s["layers"])), millions(m["forward"]), millions(m["backward_dx"]),
                     millions(m["backward_dw"]), millions(m["hebbian"]), head, millions(m["aux_forward"]),
                     millions(m["aux_backward"]), millions(s["element_ops"]["forward"]),
                     millions(s["element_ops"]["backward"]), mib(s["activation_bytes"]), mib(s["spilled_bytes"]),
                     mib(s["offchip_bytes"])])
    mem = entry["memory"]
    off = mem["offchip"]
    return Table(
        f"{name}: stages (MACs in millions per sample, bytes in MiB per step)",
        ["stage", "kind", "layers", "fwd", "bwd dX", "bwd dW", "Hebbian", "head", "aux fwd", "aux bwd", "elem fwd",
         "elem bwd", "kept", "spilled", "off-chip act.+hand-off"], rows,
        [f"memory: params {mib(mem['params_bytes'])}, BN buffers {mib(mem['buffers_bytes'])}, gradients "
         f"{mib(mem['grads_bytes'])}, optimizer state {mib(mem['optimizer_bytes'])}, Hebbian new weights "
         f"{mib(mem['hebbian_update_bytes'])}, activation peak {mib(mem['activation_peak_bytes'])}, "
         f"peak total {mib(mem['peak_bytes'])} MiB",
         f"off-chip: weights {mib(off['weights'])} + updates {mib(off['updates'])} + activations "
         f"{mib(off['activations'])} + hand-offs {mib(off['handoff'])} = {mib(mem['offchip_bytes'])} MiB"])


def layer_table(name: str, entry: dict) -> Table:
    rows = []
    for i, layer in enumerate(entry["layers"]):
        rows.append([str(i), layer["name"], layer["op"], layer["stage"], layer["mode"], shape(layer["output_shape"]),
                     f"{layer['params']:,}", millions(layer["macs_forward"]), millions(layer["macs_backward_dx"]),
                     millions(layer["macs_backward_dw"]), millions(layer["macs_hebbian"]),
                     millions(layer["element_ops_forward"]), millions(layer["element_ops_backward"]),
                     mib(layer["activation_bytes"])])
    return Table(f"{name}: layers (MACs and element ops in millions per sample, kept activations in MiB per step)",
                 ["#", "layer", "op", "stage", "mode", "output", "params", "fwd", "bwd dX", "bwd dW", "Hebbian",
                  "elem fwd", "elem bwd", "kept"], rows)


SCHEMES = {"dbl_stages": "dbl, a block per worker", "gpipe_bp": "bp, GPipe/1F1B", "ddp_bp": "bp, DDP"}


def projection_table(projection: dict) -> Table:
    """The modelled throughput on N workers (``parallel_projection``)."""
    s = projection["settings"]
    rows = []
    for r in projection["rows"]:
        slowest = max(range(r["stages"]), key=lambda i: r["stage_compute_s"][i] + r["stage_send_s"][i])
        overlapped = r.get("images_per_s_overlapped")
        rows.append([SCHEMES[r["scheme"]], str(r["workers"]), str(r["stages"]),
                     "/".join(map(str, r["segments_per_stage"])) if r["segments_per_stage"] else "-",
                     str(r["micro_batches"] or "-"), f"{1e3 * r['stage_compute_s'][slowest]:,.1f}",
                     f"{1e3 * r['stage_send_s'][slowest]:,.1f}", f"{r['bubble']:.3f}", f"{1e3 * r['step_s']:,.1f}",
                     f"{r['images_per_s']:,.0f}", f"{r['speedup_vs_bp_1_worker']:.2f}", f"{r['efficiency']:.3f}",
                     "-" if overlapped is None else f"{overlapped:,.0f}"])
    one = projection["one_worker_bp"]
    return Table(
        f"Projected throughput on N workers (MODELLED, not measured): batch {s['batch_size']}, "
        f"links of {s['link_gbps']:g} Gbit/s, {s['mac_rate']:.3g} MAC/s per worker",
        ["scheme", "workers", "stages", "segments per stage", "micro-batches", "slowest stage compute ms",
         "its traffic ms", "bubble", "step ms", "images/s", "vs bp on 1 worker", "efficiency",
         "images/s, all-reduce overlapped"], rows,
        [f"MAC rate: {s['mac_rate_source']}. bp on 1 worker: {one['images_per_s']:,.0f} images/s.",
         "Compute = batch x training MACs per sample / MAC rate; traffic = bytes / link bandwidth. dbl: steady "
         "state of the slowest block (compute + sending its output), no bubble; GPipe/1F1B: (m + p - 1) / m x the "
         "slowest stage (its output forward, its input's gradient backward); DDP: the batch split over the "
         "workers, ring all-reduce 2 (N-1)/N x gradient bytes after the backward pass (last column: hidden behind "
         "it). "
         "efficiency: the speed-up over the same program on 1 worker, per worker (docs/cost-model.md)."])


def report_tables(report: dict, detail: str = "layers") -> list[Table]:
    tables = summary_tables(report)
    if report.get("parallel_projection"):
        tables.append(projection_table(report["parallel_projection"]))
    if detail in ("stages", "layers"):
        for name, entry in report["strategies"].items():
            tables.append(stage_table(name, entry))
            if detail == "layers":
                tables.append(layer_table(name, entry))
    return tables
