"""Stage-parallel dbl against backprop on this machine's cores, CIFAR-10 (the shared zip), from one run:
single-process bp and dbl K=2 with 1 and 2 threads; dbl K=2 with its two blocks on two processes
(`llcompile train --nproc 2 --parallel stages`); dbl K=8 in one process and on two (its blocks
grouped onto the ranks by measured step time); bp data-parallel on two processes (`--parallel
data`, DDP); and the anchor, the torch module's plain backprop pipelined over two processes by
torch.distributed.pipelining (benchmarks/pipelining_bp.py, GPipe by default).

    ./dev bench parallel_cifar10 [--models resnet20,vgg11_bn] [--epochs 2] [--limit 4000]
                                 [--rows bp-1x1,...] [--out DIR] [--reuse-runs DIR]

Every row is its own process group, one after the other, all at batch 128 with llcompile train's
defaults (SGD nesterov, cosine; lr 0.1, VGG-11-BN 0.01). dbl K=2 is compiled with fixed
boundaries (`--boundary-policy fixed`: the blocks stay where the processes are). Columns: images/s
of the last epoch; its ratio to single-process bp with the same total threads (processes x
threads); the speed-up over the same program in one process with one thread; the share of the
epoch each rank computed (the runtime's `parallel.ranks[].busy_share`); bytes each rank sent per
step (DDP: the ring all-reduce's 2 (N - 1) / N x the gradient bytes, the model's figure); test
accuracy after the same epochs; pipeline efficiency = that speed-up / processes (the throughput
over N x one process's on one thread). Below the table, what the cost model projects
for the same 2 workers (`llcompile report --workers 2`, calibrated on the bp 1 x 1 row). Writes
DIR/parallel_<model>.md and .json (after every row, so that --reuse-runs DIR can render again or
resume without training what is there).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

import llcompile
from llcompile.models import export
from llcompile.report.parallel_projection import ProjectionSettings, attach_projection
from llcompile.report.programs import resolve
from llcompile.report.report import report_of
from local_sgd_cifar10 import SHARED_ZIP, train_run  # the same `llcompile train` process per row
from pipelining_bp import SCHEDULES
from pipelining_bp import launch as launch_pipelining
from pipelining_bp import parser as pipelining_parser
from strategies_cifar10 import DEFAULT_LR

ANCHOR = "pipelining"


@dataclass(frozen=True)
class Row:
    label: str
    program: str  # bp | dbl | pipelining (the torch module, not a program)
    nproc: int
    threads: int  # per process
    parallel: str | None = None  # llcompile train --parallel


ROWS = {
    "bp-1x1": Row("bp, 1 process x 1 thread", "bp", 1, 1),
    "bp-1x2": Row("bp, 1 process x 2 threads", "bp", 1, 2),
    "dbl-1x1": Row("dbl K=2, 1 process x 1 thread", "dbl", 1, 1),
    "dbl-1x2": Row("dbl K=2, 1 process x 2 threads", "dbl", 1, 2),
    "dbl-stages-2x1": Row("dbl K=2 stage-parallel, 2 processes x 1 thread", "dbl", 2, 1, "stages"),
    "bp-data-2x1": Row("bp data-parallel (DDP), 2 processes x 1 thread", "bp", 2, 1, "data"),
    "pipelining-2x1": Row("bp, torch.distributed.pipelining, 2 processes x 1 thread", ANCHOR, 2, 1),
    # more blocks than processes: the ranks' split is chosen among 7 cut points by measured step time
    # (the default placement), and every block start skips its first layer's dX
    "dbl8-1x1": Row("dbl K=8, 1 process x 1 thread", "dbl8", 1, 1),
    "dbl8-stages-2x1": Row("dbl K=8 stage-parallel, 2 processes x 1 thread", "dbl8", 2, 1, "stages"),
}


def run_row(row: Row, programs: dict[str, Path], run_dir: Path, model_name: str, args) -> dict:
    """{"epochs": epoch records (images_per_s, test_acc, and for a parallel run its ``parallel``)}."""
    if row.program == ANCHOR:
        flags = ["--model", model_name, "--nproc", str(row.nproc), "--threads", str(row.threads), "--schedule",
                 args.pipeline_schedule, "--micro-batches", str(args.micro_batches), "--epochs", str(args.epochs),
                 "--data", args.data, "--lr", str(args.lr), "--limit", str(args.limit or 0)]
        anchor_args = pipelining_parser().parse_args(flags)
        anchor_args.limit = anchor_args.limit or None
        summary = launch_pipelining(anchor_args)
        return {"epochs": summary["epochs"], "placement": summary["placement"],
                "bytes_sent_per_step": summary["bytes_sent_per_step"],
                "schedule": f"{summary['schedule']}, {summary['micro_batches']} micro-batches"}
    extra = ("--nproc", str(row.nproc), "--parallel", row.parallel) if row.parallel else ()
    row_args = argparse.Namespace(**{**vars(args), "threads": row.threads})
    return {"epochs": train_run(programs[row.program], run_dir, row_args, extra)}


def benchmark_model(name: str, tmp: Path, args) -> None:
    args = argparse.Namespace(**{**vars(args), "lr": args.lr or DEFAULT_LR.get(name, 0.1)})
    torch.manual_seed(0)
    model = export(name, tmp / f"{name}.onnx")
    programs = {"bp": llcompile.transform(model, "bp").save(tmp / f"{name}-bp", force=True),
                **{key: llcompile.transform(model, "dbl", blocks=blocks, boundary_policy="fixed").save(
                    tmp / f"{name}-{key}", force=True) for key, blocks in (("dbl", 2), ("dbl8", 8))}}
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / f"parallel_{name}.json"
    previous = args.reuse_runs / f"parallel_{name}.json" if args.reuse_runs else None
    results = json.loads(previous.read_text()) if previous and previous.exists() else {}
    for key in args.rows:
        if key not in results:
            results[key] = run_row(ROWS[key], programs, tmp / f"run-{name}-{key}", name, args)
            results_file.write_text(json.dumps(results, indent=1))
        print(f"  done: {name} {key}", file=sys.stderr)
    text = render(name, results, args)
    if "bp-1x1" in results:
        text += "\n" + "\n".join(projected(model, results["bp-1x1"]["epochs"][-1]["images_per_s"], args))
    print(text)
    (args.out / f"parallel_{name}.md").write_text(text + "\n")


def render(name: str, results: dict[str, dict], args) -> str:
    data = (f"the first {args.limit} training / {min(args.limit, 10000)} test images" if args.limit
            else "the full 50,000 / 10,000")
    lines = [f"### {name}: CIFAR-10 ({data}), {args.epochs} epoch(s), batch 128, SGD nesterov lr {args.lr:g} cosine, "
             "torch backend, CPU\n",
             "| run | images/s | vs 1-process bp, same threads | vs same program, 1 process x 1 thread | "
             "busy share per rank | MiB sent per step per rank | test acc | pipeline efficiency |",
             "|---|---|---|---|---|---|---|---|"]
    speed = {key: r["epochs"][-1]["images_per_s"] for key, r in results.items()}
    notes = []
    for key in [k for k in ROWS if k in results]:
        result = results[key]
        row, last = ROWS[key], result["epochs"][-1]
        total_threads = row.nproc * row.threads
        reference = f"bp-1x{total_threads}"
        same = f"{'bp' if row.program == ANCHOR else row.program}-1x1"
        vs_bp = f"{speed[key] / speed[reference]:.2f}" if reference in speed else "-"
        speedup = speed[key] / speed[same] if same in speed else None
        busy, sent = per_rank(result)
        efficiency = f"{speedup / row.nproc:.2f}" if speedup is not None and row.nproc > 1 else "-"
        lines.append(f"| {row.label} | {speed[key]:.1f} | {vs_bp} | {'-' if speedup is None else f'{speedup:.2f}'} | "
                     f"{busy} | {sent} | {last['test_acc']:.4f} | {efficiency} |")
        placement = result.get("placement") or (last.get("parallel") or {}).get("placement")
        if placement:
            notes.append(f"- {row.label}: placement {' | '.join(', '.join(names) for names in placement)}"
                         f"{'; ' + result['schedule'] if 'schedule' in result else ''}")
    lines += ["", *notes, "", *targets(speed)]
    return "\n".join(lines)


def projected(model: Path, bp_images_per_s: float, args) -> list[str]:
    """What the cost model predicts for 2 workers (`llcompile report --workers 2`), its MAC rate
    calibrated on the measured single-process, single-thread bp row."""
    resolved = resolve(model, [], {})
    report = report_of(resolved, batch_size=128)
    rate = report["strategies"]["bp"]["macs"]["total"] * bp_images_per_s
    attach_projection(report, resolved.model, resolved.analysis,
                      ProjectionSettings([2], args.link_gbps, rate, args.micro_batches))
    rows = {r["scheme"]: r for r in report["parallel_projection"]["rows"]}
    return [f"- cost model (modelled, not measured; {rate:.3g} MAC/s per process from the bp 1 x 1 row, links of "
            f"{args.link_gbps:g} Gbit/s): 2 workers, vs bp on one: dbl a block per worker "
            f"{rows['dbl_stages']['speedup_vs_bp_1_worker']:.2f} x (efficiency {rows['dbl_stages']['efficiency']:.2f}),"
            f" GPipe bp with {rows['gpipe_bp']['micro_batches']} micro-batches "
            f"{rows['gpipe_bp']['speedup_vs_bp_1_worker']:.2f} x, DDP bp (the batch split) "
            f"{rows['ddp_bp']['speedup_vs_bp_1_worker']:.2f} x"]


def per_rank(result: dict) -> tuple[str, str]:
    """(busy shares, MiB sent per step), one figure per rank, from the runtime's ``parallel`` record
    (the anchor: its bytes per step, no busy share)."""
    if "bytes_sent_per_step" in result:
        return "-", " / ".join(f"{b / 2**20:.2f}" for b in result["bytes_sent_per_step"])
    ranks = (result["epochs"][-1].get("parallel") or {}).get("ranks")
    if not ranks:
        return "-", "-"
    return (" / ".join(f"{r['busy_share']:.2f}" for r in ranks),
            " / ".join(f"{r['bytes_sent'] / max(r['steps'], 1) / 2**20:.2f}" for r in ranks))


def targets(speed: dict[str, float]) -> list[str]:
    """The issue's targets for stage-parallel dbl (K=2, and K=8 where it ran), checked on these numbers."""
    return _targets(speed, "dbl", "dbl K=2") + _targets(speed, "dbl8", "dbl K=8")


def _targets(speed: dict[str, float], program: str, what_ran: str) -> list[str]:
    stages = speed.get(f"{program}-stages-2x1")
    if stages is None:
        return []
    checks = [(f"{program}-1x1", 1.7, "the same program in one process with one thread"),
              ("bp-1x2", None, "single-process bp with two threads"),
              ("bp-data-2x1", None, "bp data-parallel on two processes"),
              ("pipelining-2x1", None, "bp pipelined by torch.distributed.pipelining")]
    lines = []
    for key, factor, what in checks:  # factor None: faster than
        if key in speed:
            ratio = stages / speed[key]
            met = ratio > 1 if factor is None else ratio >= factor
            wanted = "faster than" if factor is None else f">= {factor:g} x"
            lines.append(f"- target: stage-parallel {what_ran} {wanted} {what}: {ratio:.2f} x "
                         f"({'met' if met else 'NOT met'})")
    if f"{program}-1x1" in speed:
        efficiency = stages / speed[f"{program}-1x1"] / 2
        lines.append(f"- target: pipeline efficiency >= 0.85: {efficiency:.2f} "
                     f"({'met' if efficiency >= 0.85 else 'NOT met'})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,vgg11_bn")
    parser.add_argument("--epochs", type=int, default=2, help="images/s is the last epoch's")
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--limit", type=int, default=4000, help="samples per split (0: all)")
    parser.add_argument("--lr", type=float, help="peak SGD learning rate [default: 0.1; VGG-11-BN 0.01]")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {', '.join(ROWS)}")
    parser.add_argument("--pipeline-schedule", choices=SCHEDULES, default="gpipe",
                        help="the torch.distributed.pipelining anchor's schedule")
    parser.add_argument("--micro-batches", type=int, default=4, help="the anchor's micro-batches per batch")
    parser.add_argument("--link-gbps", type=float, default=10.0,
                        help="the cost model's link bandwidth for the projected line (loopback between processes)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="tables and JSON go here")
    parser.add_argument("--reuse-runs", type=Path, metavar="DIR",
                        help="take the rows already in DIR/parallel_<model>.json instead of training them again")
    args = parser.parse_args()
    args.limit = args.limit or None
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            benchmark_model(name, Path(tmp), args)


if __name__ == "__main__":
    main()
