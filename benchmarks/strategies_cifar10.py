"""Every strategy against backprop on CIFAR-10 (the shared zip), from one run: bp; dbl with the
fixed, schedule and adaptive boundary policies; dbl with conv and augmented aux heads; local-sgd
and dbl-hebbian; and a plain hand-written PyTorch loop of the same network.

    ./dev bench strategies_cifar10 [--models resnet20,vgg11_bn,mobilenetv2] [--epochs 4]
                                   [--limit 10000] [--cells "bp,dbl fixed"] [--seeds 3] [--out DIR]

Each training run is a separate process (`llcompile train`, torch backend; the plain loop in a
child of this script), so its peak memory is its own. With ``--seeds N`` every cell runs with
seeds 0..N-1 (``--first-seed S``: S..S+N-1, to split the seeds over processes and merge them with
``--reuse-runs``; ``--runs-only`` splits the cells the same way). The model's initial weights, the aux heads' and the batches' order and
augmentation all follow the seed; bp and every cell of one seed start from the same weights and
see the same batches. Per cell, mean ± sample std over the seeds: test accuracy at equal epochs, seconds per
training epoch (the median after the first) and their ratio to bp and to the plain loop, peak
resident memory (MiB) and its ratio to bp; from the cost model (`llcompile.report`) for the program
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
from llcompile.compiler.transform import recompile
from llcompile.models import build, export
from llcompile.cost.cost_model import cost_program
from llcompile.compiler.strategies import get_strategy
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
    # block-local for 8 epochs, then end to end: at the cost of fc heads, whether the last epochs recover bp;
    # block-local for the first 3 or 5 (the cheaper epochs), then end to end: whether bp's accuracy survives them
    "dbl schedule K=4 then 1 at epoch 9": ("dbl", {"blocks": 4, "boundary_policy": "schedule",
                                                   "boundary_schedule": "1:4,9:1"}),
    "dbl schedule K=4 then 1 at epoch 4": ("dbl", {"blocks": 4, "boundary_policy": "schedule",
                                                   "boundary_schedule": "1:4,4:1"}),
    "dbl schedule K=4 then 1 at epoch 6": ("dbl", {"blocks": 4, "boundary_policy": "schedule",
                                                   "boundary_schedule": "1:4,6:1"}),
    # the other order: end to end for the first half, then the cheaper block-local epochs
    "dbl schedule 1 then K=4 at epoch 6": ("dbl", {"blocks": 4, "boundary_policy": "schedule",
                                                   "boundary_schedule": "1:1,6:4"}),
    # the same, its 3 new heads first trained alone for an epoch (their blocks held): whether the collapse
    # at the switch (docs/results.md#issue14-schedules) was the untrained heads' gradients
    "dbl schedule 1 then K=4 at epoch 6 heads warmed 1 epoch": ("dbl", {
        "blocks": 4, "boundary_policy": "schedule", "boundary_schedule": "1:1,6:4", "head_warmup": 1.0}),
    "dbl adaptive K=4 fc": ("dbl", {"blocks": 4, "boundary_policy": "adaptive"}),
    "dbl fixed K=4 conv": ("dbl", {"blocks": 4, "aux_head": "conv", **FIXED}),
    # issue 28's screen: the heads at K=2, where InfoPro's table has block-local within 0.4 points of bp
    "dbl fixed K=2 fc": ("dbl", {"blocks": 2, **FIXED}),
    "dbl fixed K=2 conv": ("dbl", {"blocks": 2, "aux_head": "conv", **FIXED}),
    # DGL's and InfoPro's head: a strided 3x3 conv sees neighbourhoods before the pooling
    "dbl fixed K=2 dgl": ("dbl", {"blocks": 2, "aux_head": "dgl", **FIXED}),
    "dbl fixed K=4 dgl": ("dbl", {"blocks": 4, "aux_head": "dgl", **FIXED}),
    # + InfoPro's reconstruction term (of each block's input)
    "dbl fixed K=2 dgl recon": ("dbl", {"blocks": 2, "aux_head": "dgl", "aux_loss": "ce+recon", **FIXED}),
    "dbl fixed K=4 dgl recon": ("dbl", {"blocks": 4, "aux_head": "dgl", "aux_loss": "ce+recon", **FIXED}),
    # the reconstruction weighed as MAN's CIFAR command weighs it against the cross-entropy (5 : 0.5)
    "dbl fixed K=4 dgl recon w10": ("dbl", {"blocks": 4, "aux_head": "dgl", "aux_loss": "ce+recon",
                                            "aux_recon_weight": 10.0, **FIXED}),
    # InfoPro's per-block weights (its ResNet-32 K=4 command: reconstruction 6 -> 1, task loss 0 -> 2)
    "dbl fixed K=4 dgl recon infopro": ("dbl", {"blocks": 4, "aux_head": "dgl", "aux_loss": "ce+recon",
                                                "aux_recon_weight": "6:1", "aux_ce_weight": "0:2", **FIXED}),
    # + InfoPro's contrastive term (a 128-d projection, temperature 0.07), every weight 1
    "dbl fixed K=4 dgl contrast recon": ("dbl", {"blocks": 4, "aux_head": "dgl", "aux_loss": "ce+contrast+recon",
                                                 **FIXED}),
    # MAN: the next unit with exponentially averaged weights, plus a learned copy, then fc
    "dbl fixed K=2 ema": ("dbl", {"blocks": 2, "aux_head": "ema", **FIXED}),
    "dbl fixed K=4 ema": ("dbl", {"blocks": 4, "aux_head": "ema", **FIXED}),
    # MAN's heads are InfoPro's: the averaged unit, then the decoder's reconstruction term too
    "dbl fixed K=4 ema recon": ("dbl", {"blocks": 4, "aux_head": "ema", "aux_loss": "ce+recon", **FIXED}),
    "dbl fixed K=4 augmented": ("dbl", {"blocks": 4, "aux_head": "augmented", **FIXED}),
    "dbl fixed K=2 augmented": ("dbl", {"blocks": 2, "aux_head": "augmented", **FIXED}),
    # the shallowest augmented heads (the segments that change shape, and the deepest): the
    # activation peak under 0.7 x bp's on ResNet-20, so the adaptive policy may merge
    "dbl fixed K=4 augmented d=0.1": ("dbl", {"blocks": 4, "aux_head": "augmented", "aux_depth": 0.1, **FIXED}),
    "dbl adaptive K=4 augmented d=0.1": ("dbl", {"blocks": 4, "aux_head": "augmented", "aux_depth": 0.1,
                                                 "boundary_policy": "adaptive"}),
    # boundaries over all cut points (llcompile.policies.moving_boundaries); cheaper heads
    "dbl progressive K=8 fc": ("dbl", {"blocks": 8, "boundary_policy": "progressive"}),
    "dbl sliding K=4 fc": ("dbl", {"blocks": 4, "boundary_policy": "sliding"}),
    "dbl fixed K=8 fc pool2": ("dbl", {"blocks": 8, "aux_pool": 2, **FIXED}),
    "dbl progressive K=8 fc pool2": ("dbl", {"blocks": 8, "aux_pool": 2, "boundary_policy": "progressive"}),
    # merges only while the kept activations stay within half of bp's: the memory target held
    "dbl progressive K=8 fc pool2 budget 0.5": ("dbl", {"blocks": 8, "aux_pool": 2, "boundary_policy": "progressive",
                                                        "activation_budget": 0.5}),
    "dbl fixed K=4 conv w=0.25": ("dbl", {"blocks": 4, "aux_head": "conv", "aux_width": 0.25, **FIXED}),
    # the augmented heads on one sample in 4 of each batch: about a quarter of their cost
    "dbl fixed K=4 augmented d=0.1 sub4": ("dbl", {"blocks": 4, "aux_head": "augmented", "aux_depth": 0.1,
                                                   "aux_subsample": 4, **FIXED}),
    "dbl adaptive K=4 augmented d=0.1 sub4": ("dbl", {"blocks": 4, "aux_head": "augmented", "aux_depth": 0.1,
                                                      "aux_subsample": 4, "boundary_policy": "adaptive"}),
    "local-sgd dynamic": ("local-sgd", DYNAMIC),
    # the default Hebbian prefix (Oja, lr 1e-4) late in a 10-epoch run: issue 15's speed/accuracy target
    "local-sgd from epoch 7": ("local-sgd", {"start_epoch": 7, "ramp_epochs": 1}),
    "dbl-hebbian K=2 dynamic": ("dbl-hebbian", {"blocks": 2, **DYNAMIC, **FIXED}),
}


def plain_run(name: str, args, seed: int) -> list[dict]:
    result = subprocess.run([sys.executable, __file__, "--plain", name, "--epochs", str(args.epochs), "--data",
                             args.data, "--threads", str(args.threads), "--lr", str(args.lr), "--plain-seed", str(seed),
                             *(["--limit", str(args.limit)] if args.limit else [])],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"plain PyTorch run of {name} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def plain_pytorch(name: str, args) -> None:
    """(In a child process) the hand-written loop: the zoo's torch module, torch.optim.SGD with the
    same settings and schedule as llcompile's default, the same batches (of ``args.plain_seed``);
    prints the epochs as JSON."""
    from llcompile.data import BatchLoader, load_dataset
    from llcompile.train.lr_schedule import learning_rate

    torch.set_num_threads(args.threads)
    seed = args.plain_seed
    torch.manual_seed(seed)
    dataset = load_dataset(args.data, (3, 32, 32), 10, args.limit)
    model = build(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = len(BatchLoader(dataset, "train", 128, seed, 0))
    epochs = []
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        for step, (x, y) in enumerate(BatchLoader(dataset, "train", 128, seed, epoch)):
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


def seeded(strategy: str, options: dict, seed: int) -> dict:
    """A cell's transform options with the run's seed, for the strategies that take one (aux-head init)."""
    return {**options, "seed": seed} if "seed" in get_strategy(strategy).options else options


def train_options(args) -> tuple[str, ...]:
    """The `llcompile train` options every cell gets from this script's command line."""
    precise_bn = () if args.precise_bn is None else ("--precise-bn", str(args.precise_bn))
    return ("--device", args.device, *precise_bn)


def benchmark_model(name: str, tmp: Path, args) -> None:
    args = argparse.Namespace(**{**vars(args), "lr": args.lr or DEFAULT_LR.get(name, 0.1)})
    cells = [c.strip() for c in args.cells.split(",")] if args.cells else list(CELLS)
    rows: dict[str, dict] = {}
    costs = Costs()
    reused: dict[str, dict[int, dict]] = {}  # label -> seed -> run, from every --reuse-runs DIR
    for directory in args.reuse_runs:
        previous = directory / f"strategies_{name}.json"
        for label, row in (json.loads(previous.read_text()) if previous.exists() else {}).items():
            reused.setdefault(label, {}).update({run["seed"]: run for run in row["runs"]})
    models = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):  # a seed's cells start from the same weights
        torch.manual_seed(seed)
        models[seed] = export(name, tmp / f"{name}-seed{seed}.onnx")
    # bp first: the reference of every table; with --runs-only, the listed cells alone
    for label in (cells if args.runs_only else ["bp", *[c for c in cells if c != "bp"]]):
        strategy, options = CELLS[label]
        slug = f"{name}-{label.replace(' ', '-').replace('=', '').replace(':', '').replace(',', '')}"
        done = reused.get(label, {})
        runs = []
        for seed, model in models.items():
            program_dir = llcompile.transform(model, strategy, **seeded(strategy, options, seed)).save(
                tmp / f"program-{slug}-{seed}", force=True)
            program = llcompile.Program.load(program_dir)
            epochs = done[seed]["epochs"] if seed in done else train_run(program_dir, tmp / f"run-{slug}-{seed}",
                                                                         args, train_options(args), seed)
            per_epoch_costs = [costs.of_epoch(program, e) for e in epochs]
            runs.append({"seed": seed, "epochs": epochs, "macs": statistics.mean(c[0] for c in per_epoch_costs),
                         "activations": [c[1] for c in per_epoch_costs]})
            # after every run, so that a stopped benchmark resumes with --reuse-runs DIR
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"strategies_{name}.json").write_text(json.dumps({**rows, label: {"runs": runs}}, indent=1))
            print(f"  done: {name} {label} seed {seed}", file=sys.stderr)
        rows[label] = {"runs": runs}
    if not args.no_plain:
        done = reused.get(PLAIN, {})
        rows[PLAIN] = {"runs": [done.get(seed) or {"seed": seed, "epochs": plain_run(name, args, seed),
                                                   "macs": None, "activations": None} for seed in models]}
        print(f"  done: {name} {PLAIN}", file=sys.stderr)
    if args.runs_only:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"strategies_{name}.json").write_text(json.dumps(rows, indent=1))
        return
    segments = llcompile.analyze(llcompile.load(next(iter(models.values())))).segments
    write_results(name, rows, args, {segment.input: segment.index for segment in segments})


def _seconds(epochs: list[dict]) -> float:
    """Seconds of a training epoch: the median, the first left out (warm-up) when there are more; the
    median, so that an epoch slowed by other work on a shared machine does not move it."""
    return statistics.median(e["epoch_time_s"] for e in (epochs[1:] or epochs))


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_results(name: str, rows: dict[str, dict], args, segment_of_cut: dict[str, int]) -> None:
    def per_run(row: dict, value) -> list[float]:
        return [value(run) for run in row["runs"]]

    def accuracy(run: dict) -> float:
        return run["epochs"][-1]["test_acc"]

    def seconds(run: dict) -> float:
        return _seconds(run["epochs"])

    def total_seconds(run: dict) -> float:  # every epoch: a schedule's epochs of each kind in their share
        return sum(e["epoch_time_s"] for e in run["epochs"])

    def peak_mib(run: dict) -> float:
        return max(e["peak_memory_mb"] for e in run["epochs"])

    bp = rows["bp"]
    bp_acc = dict(zip(per_run(bp, lambda r: r["seed"]), per_run(bp, accuracy)))
    bp_s, bp_peak = _mean_std(per_run(bp, seconds))[0], _mean_std(per_run(bp, peak_mib))[0]
    bp_total = _mean_std(per_run(bp, total_seconds))[0]
    bp_macs, bp_act = _mean_std(per_run(bp, lambda r: r["macs"]))[0], bp["runs"][0]["activations"][0]
    plain_s = _mean_std(per_run(rows[PLAIN], seconds))[0] if PLAIN in rows else None
    data = (f"the first {args.limit} training / {min(args.limit, 10000)} test images" if args.limit
            else "the full 50,000 / 10,000")
    lines = [f"### {name}: CIFAR-10 ({data}), {args.epochs} epochs, batch 128, SGD nesterov lr {args.lr:g} cosine, "
             f"torch backend, {args.threads} threads, {args.device}; mean ± std over seeds "
             f"{', '.join(str(r['seed']) for r in bp['runs'])}\n",
             "| strategy | test acc | vs bp (points) | s/epoch (measured) | vs bp | vs plain PyTorch | "
             "all epochs' s vs bp | peak RSS MiB (measured) | vs bp | MACs vs bp (cost model) | "
             "activation peak vs bp (cost model, max / last epoch) | measured speed-up / MAC ideal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        acc, acc_std = _mean_std(per_run(row, accuracy))
        # the difference to bp per seed (same weights and batches), then its mean and spread
        gain, gain_std = _mean_std([accuracy(r) - bp_acc[r["seed"]] for r in row["runs"] if r["seed"] in bp_acc])
        secs, secs_std = _mean_std(per_run(row, seconds))
        peak, peak_std = _mean_std(per_run(row, peak_mib))
        vs_plain = f"{secs / plain_s:.2f}" if plain_s else "-"
        if row["runs"][0]["macs"] is not None:
            mac_ratio = _mean_std(per_run(row, lambda r: r["macs"]))[0] / bp_macs
            act = (f"{max(max(r['activations']) for r in row['runs']) / bp_act:.2f} / "
                   f"{_mean_std(per_run(row, lambda r: r['activations'][-1]))[0] / bp_act:.2f}")
            efficiency = f"{(bp_s / secs) / (1 / mac_ratio):.2f}"
            macs = f"{mac_ratio:.2f}"
        else:
            act = efficiency = macs = "-"
        lines.append(f"| {label} | {acc:.4f} ± {acc_std:.4f} | {100 * gain:+.1f} ± {100 * gain_std:.1f} | "
                     f"{secs:.1f} ± {secs_std:.1f} | {secs / bp_s:.2f} | {vs_plain} | "
                     f"{_mean_std(per_run(row, total_seconds))[0] / bp_total:.2f} | {peak:.0f} ± {peak_std:.0f} | "
                     f"{peak / bp_peak:.2f} | {macs} | {act} | {efficiency} |")
    lines.append("")
    for label, row in rows.items():
        for run in row["runs"]:
            changes = [f"epoch {e['epoch']}: "
                       + (f"stages start at segments {', '.join(str(segment_of_cut[c]) for c in e['cuts'])}"
                          if e["cuts"] else "one stage")
                       + f"{' (prefix ' + str(e['prefix']) + ')' if e.get('prefix') else ''}: "
                       f"{e['boundary_change']['reason']}" for e in run["epochs"] if "boundary_change" in e]
            if changes:
                lines.append(f"- {label}, seed {run['seed']}: " + "; ".join(changes))
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

    epochs_run = max(len(run["epochs"]) for row in rows.values() for run in row["runs"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, row in rows.items():  # the mean over the seeds, their spread as a band
        per_epoch = list(zip(*[[e["test_acc"] for e in run["epochs"]] for run in row["runs"]]))
        means = [statistics.mean(accs) for accs in per_epoch]
        spread = [statistics.stdev(accs) if len(accs) > 1 else 0.0 for accs in per_epoch]
        xs = range(1, len(means) + 1)
        line, = ax.plot(xs, means, marker="o", label=label, linestyle="--" if label in ("bp", PLAIN) else "-")
        ax.fill_between(xs, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)],
                        color=line.get_color(), alpha=0.15)
    ax.set_xticks(range(1, epochs_run + 1))
    ax.set(xlabel="epoch", ylabel="test accuracy", title=f"{name}: test accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"strategies_{name}_accuracy.png", dpi=100)
    plt.close(fig)
    # the boundary history of each moving cell's first seed
    moving = {label: row["runs"][0] for label, row in rows.items()
              if any("boundary_change" in e for e in row["runs"][0]["epochs"])}
    if not moving:
        return
    fig, ax = plt.subplots(figsize=(7, 3 + 0.4 * len(moving)))
    for offset, (label, run) in enumerate(moving.items()):
        points = [(e["epoch"] + 0.08 * offset, segment_of_cut[cut]) for e in run["epochs"] for cut in e["cuts"]]
        ax.scatter([p[0] for p in points], [p[1] for p in points], label=label, s=30)
    ax.set_xticks(range(1, epochs_run + 1))
    ax.set(xlabel="epoch", ylabel="block boundary: first segment of a block",
           title=f"{name}: block boundaries per epoch, seed {next(iter(moving.values()))['seed']} "
                 "(Hebbian prefix end included)")
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
    parser.add_argument("--device", default="cpu", help="llcompile train --device of every cell (cuda: with --no-plain, "
                        "the plain loop runs on the CPU)")
    parser.add_argument("--precise-bn", type=int, metavar="N",
                        help="llcompile train --precise-bn of every cell [default: train's own] (0: the running "
                             "averages, as the runs before --precise-bn existed)")
    parser.add_argument("--lr", type=float, help="peak SGD learning rate [default: 0.1; VGG-11-BN 0.01]")
    parser.add_argument("--cells", help=f"comma-separated subset of: {', '.join(CELLS)}")
    parser.add_argument("--seeds", type=int, default=1, help="runs per cell, seeds 0..N-1 (mean ± std)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds S..S+N-1 instead (to split the seeds over processes; merge with --reuse-runs)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch loop")
    parser.add_argument("--runs-only", action="store_true",
                        help="train the --cells alone (bp only if listed) and write their JSON, no tables: "
                             "to split the cells over processes and merge them with --reuse-runs")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="tables, JSON and plots go here")
    parser.add_argument("--reuse-runs", type=Path, metavar="DIR", action="append", default=[],
                        help="take the epochs of the runs (cell and seed) already in DIR/strategies_<model>.json "
                             "instead of training them again (costs and tables are recomputed); repeatable")
    parser.add_argument("--plain", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--plain-seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.limit = args.limit or None
    if args.plain:
        plain_pytorch(args.plain, args)
        return
    unknown = [c for c in (args.cells or "").split(",") if c.strip() and c.strip() not in CELLS]
    if unknown:
        raise SystemExit(f"unknown cells: {', '.join(unknown)}")
    if args.device != "cpu" and not args.no_plain:
        raise SystemExit("--device other than cpu needs --no-plain: the plain PyTorch loop runs on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            benchmark_model(name, Path(tmp), args)


if __name__ == "__main__":
    main()
