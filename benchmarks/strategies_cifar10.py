"""Every strategy against backprop on CIFAR-10 (the shared zip), from one run: bp; dbl with the
fixed, schedule and adaptive boundary policies; dbl with conv and augmented aux heads; local-sgd
and dbl-hebbian; and a plain hand-written PyTorch loop of the same network.

    ./dev bench strategies_cifar10 [--models resnet20,vgg11_bn,mobilenetv2] [--epochs 4]
                                   [--limit 10000] [--cells "bp,dbl fixed"] [--out DIR]

Each training run is a separate process (`llcompile train`, torch backend; the plain loop in a
child of this script), so its peak memory is its own. Per cell: test accuracy at equal epochs,
seconds per training epoch (the mean after the first) and their ratio to bp and to the plain
loop, peak resident memory vs bp, and from the cost model (`llcompile.report`) for the program
each epoch trained with: the training MACs per sample and the peak of the activations kept for
backward, vs bp; and the measured speed-up over the MAC-predicted ideal (1.00 = the time fell as
much as the MACs).
Writes DIR/strategies_<model>.md and the plots DIR/strategies_<model>_accuracy.png (test accuracy
per epoch) and DIR/strategies_<model>_boundaries.png (the boundary history of the moving policies).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import llcompile
from llcompile.compiler import recompile
from llcompile.models import build, export
from llcompile.report.cost_model import cost_program
from llcompile.strategies import get_strategy
from local_sgd_cifar10 import SHARED_ZIP, train_run  # the same `llcompile train` process per cell

# peak SGD learning rate per model when --lr is not given: VGG-11-BN diverges here at 0.05 and
# above, in plain PyTorch too (docs/results.md)
DEFAULT_LR = {"vgg11_bn": 0.01}
PLAIN = "plain PyTorch"
DYNAMIC = {"learning_mode": "dynamic", "start_epoch": 2}
FIXED = {"boundary_policy": "fixed"}
# label -> (strategy, transform options)
CELLS = {
    "bp": ("bp", {}),
    "dbl fixed K=4 fc": ("dbl", {"blocks": 4, **FIXED}),
    "dbl schedule K=4 then 2 fc": ("dbl", {"blocks": 4, "boundary_policy": "schedule", "boundary_schedule": "1:4,3:2"}),
    "dbl adaptive K=4 fc": ("dbl", {"blocks": 4, "boundary_policy": "adaptive"}),
    "dbl fixed K=4 conv": ("dbl", {"blocks": 4, "aux_head": "conv", **FIXED}),
    "dbl fixed K=4 augmented": ("dbl", {"blocks": 4, "aux_head": "augmented", **FIXED}),
    "dbl fixed K=2 augmented": ("dbl", {"blocks": 2, "aux_head": "augmented", **FIXED}),
    # the shallowest augmented heads (the segments that change shape, and the deepest): the
    # activation peak under 0.7 x bp's on ResNet-20, so the adaptive policy may merge
    "dbl fixed K=4 augmented d=0.1": ("dbl", {"blocks": 4, "aux_head": "augmented", "aux_depth": 0.1, **FIXED}),
    "dbl adaptive K=4 augmented d=0.1": ("dbl", {"blocks": 4, "aux_head": "augmented", "aux_depth": 0.1,
                                                 "boundary_policy": "adaptive"}),
    "local-sgd dynamic": ("local-sgd", DYNAMIC),
    "dbl-hebbian K=2 dynamic": ("dbl-hebbian", {"blocks": 2, **DYNAMIC, **FIXED}),
}


def plain_run(name: str, args) -> list[dict]:
    result = subprocess.run([sys.executable, __file__, "--plain", name, "--epochs", str(args.epochs), "--data",
                             args.data, "--threads", str(args.threads), "--lr", str(args.lr),
                             *(["--limit", str(args.limit)] if args.limit else [])],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"plain PyTorch run of {name} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def plain_pytorch(name: str, args) -> None:
    """(In a child process) the hand-written loop: the zoo's torch module, torch.optim.SGD with the
    same settings and schedule as llcompile's default, the same batches; prints the epochs as JSON."""
    from llcompile.data import BatchLoader, load_dataset
    from llcompile.train.lr_schedule import learning_rate

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset = load_dataset(args.data, (3, 32, 32), 10, args.limit)
    model = build(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = len(BatchLoader(dataset, "train", 128, 0, 0))
    epochs = []
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for step, (x, y) in enumerate(BatchLoader(dataset, "train", 128, 0, epoch)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate("cosine", args.lr, epoch * steps + step, args.epochs * steps)
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in BatchLoader(dataset, "test", 128, 0, 0):
                correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
                total += len(y)
        status = Path("/proc/self/status").read_text()
        peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
        epochs.append({"epoch": epoch + 1, "test_acc": correct / total, "epoch_time_s": seconds,
                       "peak_memory_mb": peak})
    print(json.dumps(epochs))


class Costs:
    """Cost-model numbers of the program an epoch trained with (re-emitted for its prefix and cuts)."""

    def __init__(self):
        self._cache: dict[tuple, tuple[int, int]] = {}

    def of_epoch(self, program: llcompile.Program, record: dict) -> tuple[int, int]:
        """(training MACs per batch, activation peak bytes) at batch 128."""
        prefix = record.get("prefix", 0)
        cuts = tuple(record["cuts"][1:] if prefix else record["cuts"]) if "cuts" in record else None
        key = (program.strategy, json.dumps(program.options, sort_keys=True), prefix, cuts)
        if key not in self._cache:
            changes = {}
            if "prefix" in get_strategy(program.strategy).options and prefix != program.options.get("prefix", 0):
                changes["prefix"] = prefix
            base_cuts = program.cuts[1:] if program.options.get("prefix") else program.cuts
            if cuts is not None and "boundary_policy" in program.options and (changes or list(cuts) != base_cuts):
                changes.update(blocks=None, cuts=list(cuts))
            epoch_program = recompile(program, **changes) if changes else program
            cost = cost_program(epoch_program, batch_size=128)
            self._cache[key] = (cost.macs()["total"], cost.activation_peak_bytes)
        return self._cache[key]


def benchmark_model(name: str, tmp: Path, args) -> None:
    args = argparse.Namespace(**{**vars(args), "lr": args.lr or DEFAULT_LR.get(name, 0.1)})
    torch.manual_seed(0)
    model = export(name, tmp / f"{name}.onnx")
    cells = [c.strip() for c in args.cells.split(",")] if args.cells else list(CELLS)
    rows: dict[str, dict] = {}
    costs = Costs()
    previous = args.reuse_runs / f"strategies_{name}.json" if args.reuse_runs else None
    reused = json.loads(previous.read_text()) if previous and previous.exists() else {}
    for label in ["bp", *[c for c in cells if c != "bp"]]:
        strategy, options = CELLS[label]
        slug = f"{name}-{label.replace(' ', '-').replace('=', '').replace(':', '').replace(',', '')}"
        program_dir = llcompile.transform(model, strategy, **options).save(tmp / f"program-{slug}", force=True)
        program = llcompile.Program.load(program_dir)
        epochs = reused.get(label, {}).get("epochs") or train_run(program_dir, tmp / f"run-{slug}", args)
        per_epoch_costs = [costs.of_epoch(program, e) for e in epochs]
        rows[label] = {"epochs": epochs, "macs": statistics.mean(c[0] for c in per_epoch_costs),
                       "activations": [c[1] for c in per_epoch_costs]}
        print(f"  done: {name} {label}", file=sys.stderr)
    if not args.no_plain:
        rows[PLAIN] = reused.get(PLAIN) or {"epochs": plain_run(name, args), "macs": None, "activations": None}
        print(f"  done: {name} {PLAIN}", file=sys.stderr)
    segments = llcompile.analyze(llcompile.load(model)).segments
    write_results(name, rows, args, {segment.input: segment.index for segment in segments})


def _seconds(epochs: list[dict]) -> float:
    """Mean seconds of a training epoch, the first left out (warm-up) when there are more."""
    return statistics.mean(e["epoch_time_s"] for e in (epochs[1:] or epochs))


def write_results(name: str, rows: dict[str, dict], args, segment_of_cut: dict[str, int]) -> None:
    bp = rows["bp"]
    bp_s, bp_acc = _seconds(bp["epochs"]), bp["epochs"][-1]["test_acc"]
    bp_peak = max(e["peak_memory_mb"] for e in bp["epochs"])
    plain_s = _seconds(rows[PLAIN]["epochs"]) if PLAIN in rows else None
    data = (f"the first {args.limit} training / {min(args.limit, 10000)} test images" if args.limit
            else "the full 50,000 / 10,000")
    lines = [f"### {name}: CIFAR-10 ({data}), {args.epochs} epochs, batch 128, SGD nesterov lr {args.lr:g} cosine, "
             f"torch backend, {args.threads} threads, CPU\n",
             "| strategy | test acc | vs bp (points) | s/epoch | vs bp | vs plain PyTorch | peak RSS vs bp | "
             "MACs vs bp | activation peak vs bp (max / last epoch) | measured speed-up / MAC ideal |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        epochs = row["epochs"]
        seconds, acc = _seconds(epochs), epochs[-1]["test_acc"]
        peak = max(e["peak_memory_mb"] for e in epochs)
        vs_plain = f"{seconds / plain_s:.2f}" if plain_s else "-"
        if row["macs"] is not None:
            mac_ratio = row["macs"] / bp["macs"]
            bp_act = bp["activations"][0]
            act = f"{max(row['activations']) / bp_act:.2f} / {row['activations'][-1] / bp_act:.2f}"
            efficiency = f"{(bp_s / seconds) / (1 / mac_ratio):.2f}"
            macs = f"{mac_ratio:.2f}"
        else:
            act = efficiency = macs = "-"
        lines.append(f"| {label} | {acc:.4f} | {100 * (acc - bp_acc):+.1f} | {seconds:.1f} | {seconds / bp_s:.2f} | "
                     f"{vs_plain} | {peak / bp_peak:.2f} | {macs} | {act} | {efficiency} |")
    lines.append("")
    for label, row in rows.items():
        changes = [f"epoch {e['epoch']}: stages start at segments "
                   f"{', '.join(str(segment_of_cut[c]) for c in e['cuts'])}"
                   f"{' (prefix ' + str(e['prefix']) + ')' if e.get('prefix') else ''}: "
                   f"{e['boundary_change']['reason']}" for e in row["epochs"] if "boundary_change" in e]
        if changes:
            lines.append(f"- {label}: " + "; ".join(changes))
    lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"strategies_{name}.md").write_text(text + "\n")
    (args.out / f"strategies_{name}.json").write_text(json.dumps(rows, indent=1))
    plot(name, rows, args.out, segment_of_cut)


def plot(name: str, rows: dict[str, dict], out: Path, segment_of_cut: dict[str, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, row in rows.items():
        epochs = row["epochs"]
        ax.plot([e["epoch"] for e in epochs], [e["test_acc"] for e in epochs], marker="o", label=label,
                linestyle="--" if label in ("bp", PLAIN) else "-")
    ax.set_xticks(range(1, max(len(r["epochs"]) for r in rows.values()) + 1))
    ax.set(xlabel="epoch", ylabel="test accuracy", title=f"{name}: test accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"strategies_{name}_accuracy.png", dpi=100)
    plt.close(fig)
    moving = {label: row for label, row in rows.items() if any("boundary_change" in e for e in row["epochs"])}
    if not moving:
        return
    fig, ax = plt.subplots(figsize=(7, 3 + 0.4 * len(moving)))
    for offset, (label, row) in enumerate(moving.items()):
        points = [(e["epoch"] + 0.08 * offset, segment_of_cut[cut]) for e in row["epochs"] for cut in e["cuts"]]
        ax.scatter([p[0] for p in points], [p[1] for p in points], label=label, s=30)
    ax.set_xticks(range(1, max(len(r["epochs"]) for r in rows.values()) + 1))
    ax.set(xlabel="epoch", ylabel="block boundary: first segment of a block",
           title=f"{name}: block boundaries per epoch (Hebbian prefix end included)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"strategies_{name}_boundaries.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,vgg11_bn,mobilenetv2")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--limit", type=int, default=10000, help="samples per split (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, help="peak SGD learning rate [default: 0.1; VGG-11-BN 0.01]")
    parser.add_argument("--cells", help=f"comma-separated subset of: {', '.join(CELLS)}")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch loop")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="tables, JSON and plots go here")
    parser.add_argument("--reuse-runs", type=Path, metavar="DIR",
                        help="take the epochs of cells already in DIR/strategies_<model>.json instead of training "
                             "them again (costs and tables are recomputed)")
    parser.add_argument("--plain", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.limit = args.limit or None
    if args.plain:
        plain_pytorch(args.plain, args)
        return
    unknown = [c for c in (args.cells or "").split(",") if c.strip() and c.strip() not in CELLS]
    if unknown:
        raise SystemExit(f"unknown cells: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            benchmark_model(name, Path(tmp), args)


if __name__ == "__main__":
    main()
