"""Stage-parallel dbl against backprop on this machine's cores, CIFAR-10 (the shared zip), from one run:
single-process bp and dbl K=2 with 1 and 2 threads; dbl K=2 with its two blocks on two processes
(`llcompile train --nproc 2 --parallel stages`); dbl K=8 in one process and on two (its blocks
grouped onto the ranks by measured step time); bp data-parallel on two processes (`--parallel
data`, DDP); and the anchor, the torch module's plain backprop pipelined over two processes by
torch.distributed.pipelining (benchmarks/pipelining_bp.py, GPipe by default).

    ./dev bench parallel_cifar10 [--models resnet20,vgg11_bn] [--epochs 2] [--limit 4000]
                                 [--rows bp-1x1,...] [--k2-cuts CUT,...] [--repeats R] [--backend ort]
                                 [--out DIR] [--reuse-runs DIR]

Every row is its own process group, one after the other, all at batch 128 with llcompile train's
defaults (SGD nesterov, cosine; lr 0.1, VGG-11-BN 0.01). dbl K=2 is compiled with fixed
boundaries (`--boundary-policy fixed`: the blocks stay where the processes are). Columns: images/s
of the last epoch; its ratio to single-process bp with the same total threads (processes x
threads); the speed-up over the same program in one process with one thread; the share of the
epoch each rank computed (the runtime's `parallel.ranks[].busy_share`, mean over rounds); bytes each rank sent per
step (DDP: the ring all-reduce's 2 (N - 1) / N x the gradient bytes, the model's figure); test
accuracy after the same epochs; pipeline efficiency = that speed-up / processes (the throughput
over N x one process's on one thread). `--k2-cuts` adds, for each cut point given (`inspect MODEL`;
an inner cut compiles with `--inner-cuts`), dbl K=2 cut there in one process and stage-parallel.
`--repeats R` runs the whole list of rows R times, round after round, so that every row meets the
same load: a figure is then the mean ± std over the rounds, a ratio the mean ± std of the ratios
within each round. `--backend ort` trains every llcompile row on onnxruntime-training (the anchor
is torch's and is left out). Below the table, what the cost model projects
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

import numpy as np
import torch

import llcompile
from llcompile.models import export
from llcompile.passes.inner_cuts import INNER_CUT_PREFIX
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


def k2_rows(cuts: list[str]) -> dict[str, Row]:
    """Rows of dbl K=2 cut at each of ``cuts`` (program ``dbl@i``): in one process, and stage-parallel."""
    rows = {}
    for index, cut in enumerate(cuts):
        rows[f"dbl@{index}-1x1"] = Row(f"dbl K=2 cut at {cut}, 1 process x 1 thread", f"dbl@{index}", 1, 1)
        rows[f"dbl@{index}-stages-2x1"] = Row(f"dbl K=2 cut at {cut} stage-parallel, 2 processes x 1 thread",
                                              f"dbl@{index}", 2, 1, "stages")
    return rows


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
    extra = ("--backend", args.backend)
    if row.parallel:
        extra += ("--nproc", str(row.nproc), "--parallel", row.parallel)
    if row.parallel == "stages" and args.max_in_flight:
        extra += ("--max-in-flight", str(args.max_in_flight))
    row_args = argparse.Namespace(**{**vars(args), "threads": row.threads})
    return {"epochs": train_run(programs[row.program], run_dir, row_args, extra)}


def benchmark_model(name: str, tmp: Path, args) -> None:
    args = argparse.Namespace(**{**vars(args), "lr": args.lr or DEFAULT_LR.get(name, 0.1)})
    torch.manual_seed(0)
    model = export(name, tmp / f"{name}.onnx")
    programs = {"bp": llcompile.transform(model, "bp").save(tmp / f"{name}-bp", force=True),
                **{key: llcompile.transform(model, "dbl", blocks=blocks, boundary_policy="fixed").save(
                    tmp / f"{name}-{key}", force=True) for key, blocks in (("dbl", 2), ("dbl8", 8))},
                **{f"dbl@{index}": llcompile.transform(
                    model, "dbl", cuts=[cut], boundary_policy="fixed",
                    inner_cuts=cut.startswith(INNER_CUT_PREFIX) or None).save(tmp / f"{name}-dbl@{index}", force=True)
                   for index, cut in enumerate(args.k2_cuts)}}
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / f"parallel_{name}.json"
    previous = args.reuse_runs / f"parallel_{name}.json" if args.reuse_runs else None
    results = json.loads(previous.read_text()) if previous and previous.exists() else {}
    results = {key: runs if isinstance(runs, list) else [runs] for key, runs in results.items()}  # one-round files
    for round_ in range(args.repeats):
        for key in args.rows:
            if len(results.setdefault(key, [])) <= round_:
                results[key].append(run_row(args.row_table[key], programs, tmp / f"run-{name}-{key}", name, args))
                results_file.write_text(json.dumps(results, indent=1))
            print(f"  done: {name} {key} (round {round_ + 1} of {args.repeats})", file=sys.stderr)
    text = render(name, {key: runs for key, runs in results.items() if runs}, args)
    if results.get("bp-1x1"):
        bp_speeds = [run["epochs"][-1]["images_per_s"] for run in results["bp-1x1"]]
        text += "\n" + "\n".join(projected(model, float(np.mean(bp_speeds)), args))
    print(text)
    (args.out / f"parallel_{name}.md").write_text(text + "\n")


def render(name: str, results: dict[str, list[dict]], args) -> str:
    data = (f"the first {args.limit} training / {min(args.limit, 10000)} test images" if args.limit
            else "the full 50,000 / 10,000")
    rounds = min(len(runs) for runs in results.values())
    repeated = f", mean ± std over {rounds} rounds" if rounds > 1 else ""
    lines = [f"### {name}: CIFAR-10 ({data}), {args.epochs} epoch(s), batch 128, SGD nesterov lr {args.lr:g} cosine, "
             f"{args.backend} backend, CPU{repeated}\n",
             "| run | images/s | vs 1-process bp, same threads | vs same program, 1 process x 1 thread | "
             "busy share per rank | MiB sent per step per rank | test acc | pipeline efficiency |",
             "|---|---|---|---|---|---|---|---|"]
    # per row, the last epoch's images/s of each round (rounds beyond the fewest any row has are left out)
    speed = {key: np.array([run["epochs"][-1]["images_per_s"] for run in runs[:rounds]]) for key, runs in results.items()}
    notes = []
    for key in [k for k in args.row_table if k in results]:
        runs = results[key][:rounds]
        row, last = args.row_table[key], runs[-1]["epochs"][-1]
        reference = f"bp-1x{row.nproc * row.threads}"
        same = f"{'bp' if row.program == ANCHOR else row.program}-1x1"
        speedup = speed[key] / speed[same] if same in speed else None
        efficiency = spread(speedup / row.nproc) if speedup is not None and row.nproc > 1 else "-"
        busy, sent = per_rank(runs)
        accuracy = spread(np.array([run["epochs"][-1]["test_acc"] for run in runs]), ".4f")
        lines.append(f"| {row.label} | {spread(speed[key], '.1f')} | "
                     f"{spread(speed[key] / speed[reference]) if reference in speed else '-'} | "
                     f"{'-' if speedup is None else spread(speedup)} | {busy} | {sent} | {accuracy} | {efficiency} |")
        placement = runs[-1].get("placement") or (last.get("parallel") or {}).get("placement")
        if placement:
            notes.append(f"- {row.label}: placement {' | '.join(', '.join(names) for names in placement)}"
                         f"{'; ' + runs[-1]['schedule'] if 'schedule' in runs[-1] else ''}")
    lines += ["", *notes, "", *targets(speed, args.row_table)]
    return "\n".join(lines)


def spread(values: np.ndarray, fmt: str = ".2f") -> str:
    """The mean of one figure per round, with the std when there are several rounds."""
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{np.mean(values):{fmt}} ± {np.std(values, ddof=1):{fmt}}"


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


def per_rank(runs: list[dict]) -> tuple[str, str]:
    """(busy shares, mean over the rounds; MiB sent per step), one figure per rank, from the runtime's
    ``parallel`` records (the anchor: its bytes per step, no busy share)."""
    if "bytes_sent_per_step" in runs[-1]:
        return "-", " / ".join(f"{b / 2**20:.2f}" for b in runs[-1]["bytes_sent_per_step"])
    per_round = [(run["epochs"][-1].get("parallel") or {}).get("ranks") for run in runs]
    if not all(per_round):
        return "-", "-"
    busy = np.mean([[r["busy_share"] for r in ranks] for ranks in per_round], axis=0)
    return (" / ".join(f"{b:.2f}" for b in busy),
            " / ".join(f"{r['bytes_sent'] / max(r['steps'], 1) / 2**20:.2f}" for r in per_round[-1]))


def targets(speed: dict[str, np.ndarray], row_table: dict[str, Row]) -> list[str]:
    """The issue's targets for every stage-parallel dbl row that ran, checked on these numbers: a
    ratio per round, their mean (± std); "met" by the mean, and a mean inside one std of the target
    is said to be no difference."""
    lines = []
    for key, row in row_table.items():
        if row.parallel == "stages" and key in speed:
            lines += _targets(speed, row.program, row.label.split(" stage-parallel")[0])
    return lines


def _targets(speed: dict[str, np.ndarray], program: str, what_ran: str) -> list[str]:
    stages = speed[f"{program}-stages-2x1"]
    checks = [(f"{program}-1x1", 1.7, "the same program in one process with one thread"),
              ("bp-1x2", 1.0, "single-process bp with two threads"),
              ("bp-data-2x1", 1.0, "bp data-parallel on two processes"),
              ("pipelining-2x1", 1.0, "bp pipelined by torch.distributed.pipelining")]
    lines = []
    for key, target, what in checks:
        if key in speed:
            lines.append(_check(f"stage-parallel {what_ran} {'faster than' if target == 1.0 else f'>= {target:g} x'} "
                                f"{what}", stages / speed[key], target, "x"))
    if f"{program}-1x1" in speed:
        lines.append(_check(f"stage-parallel {what_ran} pipeline efficiency >= 0.85",
                            stages / speed[f"{program}-1x1"] / 2, 0.85, ""))
    return lines


def _check(what: str, ratios: np.ndarray, target: float, unit: str) -> str:
    mean = float(np.mean(ratios))
    verdict = "met" if (mean > target if target == 1.0 else mean >= target) else "NOT met"
    if len(ratios) > 1 and abs(mean - target) < np.std(ratios, ddof=1):
        verdict += ", within one std of the target: no difference shown"
    return f"- target: {what}: {spread(ratios)}{' ' + unit if unit else ''} ({verdict})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,vgg11_bn")
    parser.add_argument("--epochs", type=int, default=2, help="images/s is the last epoch's")
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--limit", type=int, default=4000, help="samples per split (0: all)")
    parser.add_argument("--lr", type=float, help="peak SGD learning rate [default: 0.1; VGG-11-BN 0.01]")
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(ROWS)}, and the --k2-cuts rows "
                                       "dbl@I-1x1, dbl@I-stages-2x1 (I: the cut's place in that list, from 0) "
                                       "[default: all]")
    parser.add_argument("--k2-cuts", default="", help="comma-separated cut points: dbl K=2 cut at each, as more rows")
    parser.add_argument("--max-in-flight", type=int,
                        help="stage-parallel rows: llcompile train --max-in-flight [default: its default]")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all rows, one after the other")
    parser.add_argument("--backend", choices=("torch", "ort"), default="torch",
                        help="llcompile train --backend of every row but the torch.distributed.pipelining anchor")
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
    args.k2_cuts = [c.strip() for c in args.k2_cuts.split(",") if c.strip()]
    args.row_table = {**ROWS, **k2_rows(args.k2_cuts)}
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else list(args.row_table)
    unknown = [r for r in args.rows if r not in args.row_table]
    if unknown:
        raise SystemExit(f"unknown rows: {', '.join(unknown)}")
    if args.backend != "torch" and any(args.row_table[r].program == ANCHOR for r in args.rows):
        raise SystemExit("the torch.distributed.pipelining anchor trains on torch: leave it out of --rows "
                         "with --backend ort")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            benchmark_model(name, Path(tmp), args)


if __name__ == "__main__":
    main()
