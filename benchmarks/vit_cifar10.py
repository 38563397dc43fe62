"""The zoo's CIFAR ViT (4x4 patches, 6 pre-norm blocks, dim 192, 3 heads) on CIFAR-10 (the shared zip):
bp against dbl with fc and augmented aux heads and against local-sgd, at equal epochs.

    ./dev bench vit_cifar10 [--epochs 5] [--limit 2000] [--blocks 4] [--warmup-epochs 1]
                            [--lr 1e-3] [--cells "bp,dbl K=4 fc"] [--seed 0] [--out DIR]

Every cell starts from the same exported weights and sees the same batches; AdamW (weight decay
0.05), a linear warm-up then a cosine schedule, batch 128, torch backend, each run a separate
`llcompile train` process. One table: test accuracy after the last epoch and its difference to bp,
seconds per training epoch (the mean after the first) and its ratio to bp, peak resident memory
(measured), and from the cost model (`llcompile.report`) the training MACs and the peak of the
activations kept for backward, both vs bp, at batch 128.
Writes DIR/vit_cifar10.md and DIR/vit_cifar10.json.

The ViT is 125 M MACs a 32x32 image forward (115.6 M in its layers, the rest attention; `llcompile
report`): on this 2-core machine (shared) bp took 32 s an epoch of 256 images with 2 threads
(`--epochs 2 --limit 256`), so the defaults (2,000 images, 5 epochs, four cells) take over an hour.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

import llcompile
from llcompile.models import export
from local_sgd_cifar10 import SHARED_ZIP, train_run
from strategies_cifar10 import Costs

MODEL = "vit"
# label -> (strategy, transform options); the block count comes from --blocks
CELLS = {
    "bp": ("bp", {}),
    "dbl K fc": ("dbl", {"boundary_policy": "fixed"}),
    "dbl K augmented": ("dbl", {"aux_head": "augmented", "boundary_policy": "fixed"}),
    "local-sgd dynamic": ("local-sgd", {"learning_mode": "dynamic", "start_epoch": 2}),
}


def cell_options(label: str, blocks: int) -> tuple[str, dict]:
    strategy, options = CELLS[label]
    return strategy, {**options, "blocks": blocks} if strategy == "dbl" else options


def run_cells(args, tmp: Path) -> dict[str, dict]:
    torch.manual_seed(args.seed)
    model = export(MODEL, tmp / f"{MODEL}.onnx")
    extra = ("--optimizer", "adamw", "--weight-decay", "0.05", "--warmup-epochs", str(args.warmup_epochs))
    costs = Costs()
    rows = {}
    for label in args.cells:
        strategy, options = cell_options(label, args.blocks)
        slug = label.replace(" ", "-")
        program_dir = llcompile.transform(model, strategy, **options).save(tmp / f"program-{slug}", force=True)
        program = llcompile.Program.load(program_dir)
        epochs = train_run(program_dir, tmp / f"run-{slug}", args, extra, seed=args.seed)
        per_epoch = [costs.of_epoch(program, e) for e in epochs]
        rows[label] = {"epochs": epochs, "macs": statistics.mean(c[0] for c in per_epoch),
                       "activation_peak": max(c[1] for c in per_epoch), "cuts": program.cuts}
        print(f"  done: {label}", file=sys.stderr)
    return rows


def table(rows: dict[str, dict], args) -> str:
    def seconds(row):
        timed = row["epochs"][1:] or row["epochs"]
        return statistics.mean(e["epoch_time_s"] for e in timed)

    bp = rows["bp"]
    bp_acc, bp_s = bp["epochs"][-1]["test_acc"], seconds(bp)
    bp_peak = max(e["peak_memory_mb"] for e in bp["epochs"])
    data = f"the first {args.limit} training / {min(args.limit, 10000)} test images" if args.limit else "all images"
    lines = [f"### ViT (CIFAR size) on CIFAR-10 ({data}), {args.epochs} epochs, batch 128, AdamW lr {args.lr:g} "
             f"wd 0.05, {args.warmup_epochs:g} warm-up epoch(s) then cosine, dbl K={args.blocks}, torch backend, "
             f"{args.threads} threads, CPU, seed {args.seed}\n",
             "| strategy | test acc | vs bp (points) | s/epoch (measured) | vs bp | peak RSS MiB (measured) | vs bp | "
             "MACs vs bp (cost model) | activation peak vs bp (cost model) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        acc, secs = row["epochs"][-1]["test_acc"], seconds(row)
        peak = max(e["peak_memory_mb"] for e in row["epochs"])
        lines.append(f"| {label.replace(' K ', f' K={args.blocks} ')} | {acc:.4f} | {100 * (acc - bp_acc):+.1f} | "
                     f"{secs:.1f} | {secs / bp_s:.2f} | {peak:.0f} | {peak / bp_peak:.2f} | "
                     f"{row['macs'] / bp['macs']:.2f} | {row['activation_peak'] / bp['activation_peak']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--limit", type=int, default=2000, help="samples per split (0: all)")
    parser.add_argument("--blocks", type=int, default=4, help="dbl's blocks")
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cells", help=f"comma-separated subset of: {', '.join(CELLS)} (bp always runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="the table and JSON go here")
    args = parser.parse_args()
    args.limit = args.limit or None
    chosen = [c.strip() for c in args.cells.split(",")] if args.cells else list(CELLS)
    unknown = [c for c in chosen if c not in CELLS]
    if unknown:
        raise SystemExit(f"unknown cells: {', '.join(unknown)}")
    args.cells = ["bp", *[c for c in chosen if c != "bp"]]
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_cells(args, Path(tmp))
    text = table(rows, args)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vit_cifar10.md").write_text(text)
    (args.out / "vit_cifar10.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
