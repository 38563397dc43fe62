"""LoCal+SGD on CIFAR-10 (the shared zip): bp vs local-sgd (static and dynamic learning mode) vs
dbl-hebbian, equal epochs, the torch backend, all from one run.

    ./dev bench local_sgd_cifar10 [--models resnet20,vgg11_bn] [--epochs 5] [--limit N]

Part 1 (step times): the seconds of one training step at batch 128 as the Hebbian prefix grows,
each prefix interleaved with bp so machine noise hits all alike; split into the Hebbian stage and
the SGD stage: the profile of where the time goes.
Part 2 (training): each run a separate `llcompile train` process (its peak memory is its own):
test accuracy, seconds per epoch with the epoch's prefix, the speed-up of the epochs whose prefix
is at its maximum over bp's same epochs, peak resident memory. Prints markdown tables.
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

import numpy as np
import torch

import llcompile
from llcompile.backends import OptimizerConfig
from llcompile.backends.torch.backend import TorchBackend
from llcompile.models import export

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


def strategies(epochs: int) -> dict[str, tuple[str, dict]]:
    """name -> (strategy, transform options); the static ramp reaches the maximum prefix at epoch 3."""
    static = {"learning_mode": "static", "start_epoch": 2, "ramp_epochs": 2}
    return {
        "bp": ("bp", {}),
        "local-sgd static": ("local-sgd", static),
        "local-sgd dynamic": ("local-sgd", {"learning_mode": "dynamic", "start_epoch": 2}),
        "dbl-hebbian K=2 static": ("dbl-hebbian", {"blocks": 2, **static}),
    }


def train_run(program: Path, run_dir: Path, args, extra: tuple[str, ...] = (), seed: int = 0) -> list[dict]:
    """One `llcompile train` process (``extra``: more of its flags); the epoch records of its metrics.jsonl."""
    command = [sys.executable, "-m", "llcompile", "train", str(program), "--data", args.data,
               "--epochs", str(args.epochs), "--batch-size", "128", "--threads", str(args.threads),
               "--run-dir", str(run_dir), "--quiet", "--seed", str(seed), "--force", "--lr", str(args.lr), *extra]
    if args.limit:
        command += ["--data-limit", str(args.limit)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def step_times(model: Path, prefixes: list[int], args, steps: int = 12) -> dict[int, list[float]]:
    """Median seconds per stage of one local-sgd step at batch 128 for each prefix (0 = bp)."""
    torch.set_num_threads(args.threads)
    built = {}
    for prefix in prefixes:
        program = llcompile.transform(model, "bp") if prefix == 0 else llcompile.transform(
            model, "local-sgd", prefix=prefix)
        built[prefix] = TorchBackend().build(program, OptimizerConfig())
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times: dict[int, list[list[float]]] = {p: [] for p in built}
    for i in range(steps + 2):  # interleaved; the first 2 rounds are warm-up
        for prefix, stages in built.items():
            activation, per_stage = x, []
            for stage in stages:
                start = time.perf_counter()
                activation = stage.train_step(activation, y, 1e-3 if stage.name == "hebbian" else 0.1).output
                per_stage.append(time.perf_counter() - start)
            if i >= 2:
                times[prefix].append(per_stage)
    return {p: np.median(np.array(t), axis=0).tolist() for p, t in times.items()}


def measure_peak_rss(model: str, backend: str, prefix: int, threads: int, steps: int = 6) -> None:
    """(In a child process) build the program for ``prefix``, run ``steps`` training steps at batch
    128 on random data, print the process's peak resident set in MiB."""
    from llcompile.backends import make_backend

    torch.set_num_threads(threads)
    program = llcompile.transform(model, "bp") if prefix == 0 else llcompile.transform(model, "local-sgd",
                                                                                      prefix=prefix)
    runner = make_backend(backend, "cpu", "eager")
    stages = runner.build(program, OptimizerConfig())
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, y = runner.to_batch(rng.standard_normal((128, 3, 32, 32), dtype=np.float32),
                               rng.integers(0, 10, 128).astype(np.int64))
        for stage in stages:
            x = stage.train_step(x, y, 1e-3 if stage.name == "hebbian" else 0.1).output
    # VmHWM, the peak of this process image: ru_maxrss would include the parent's peak from before exec
    status = Path("/proc/self/status").read_text()
    print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024)


def peak_rss_by_prefix(model: Path, prefixes: list[int], args) -> dict[tuple[str, int], float]:
    peaks = {}
    for backend in ("torch", "ort"):
        for prefix in prefixes:
            result = subprocess.run([sys.executable, __file__, "--measure-memory", str(model), backend, str(prefix)],
                                    capture_output=True, text=True, check=True)
            peaks[backend, prefix] = float(result.stdout.split()[-1])
    return peaks


def benchmark_model(name: str, tmp: Path, args) -> None:
    torch.manual_seed(0)
    model = export(name, tmp / f"{name}.onnx")
    probe = llcompile.transform(model, "local-sgd")
    max_prefix = probe.options["max_prefix"]
    segments = len(llcompile.analyze(llcompile.load(model)).segments)
    prefixes = sorted({0, max(1, max_prefix // 2), max_prefix, min(segments - 2, max_prefix + 2)})
    per_prefix = step_times(model, prefixes, args)
    bp_step = sum(per_prefix[0])
    print(f"### {name}: one step at batch 128 as the Hebbian prefix grows ({args.threads} threads, median of 12 "
          f"interleaved steps; {segments} segments, default --max-prefix {max_prefix})\n")
    print("| prefix (segments) | localized share of forward MACs | s/step | speed-up vs bp | Hebbian stage s | "
          "SGD stage s |\n|---|---|---|---|---|---|")
    analysis = llcompile.analyze(llcompile.load(model))
    for prefix, seconds in per_prefix.items():
        share = sum(s.macs for s in analysis.segments[:prefix]) / analysis.macs
        hebbian, sgd = (seconds[0], sum(seconds[1:])) if prefix else (0.0, seconds[0])
        print(f"| {prefix} | {share:.0%} | {sum(seconds):.3f} | {bp_step / sum(seconds):.2f}x | {hebbian:.3f} | "
              f"{sgd:.3f} |")
    print()
    peaks = peak_rss_by_prefix(model, prefixes, args)
    print(f"### {name}: peak resident memory of a process running 6 steps at batch 128, by prefix\n")
    print("| prefix | torch MiB | vs bp | ort MiB | vs bp |\n|---|---|---|---|---|")
    for prefix in prefixes:
        print(f"| {prefix} | {peaks['torch', prefix]:.0f} | {peaks['torch', prefix] / peaks['torch', 0]:.2f} | "
              f"{peaks['ort', prefix]:.0f} | {peaks['ort', prefix] / peaks['ort', 0]:.2f} |")
    print()
    rows = []
    for label, (strategy, options) in strategies(args.epochs).items():
        slug = f"{name}-{label.replace(' ', '-').replace('=', '')}"
        program = llcompile.transform(model, strategy, **options).save(tmp / f"program-{slug}", force=True)
        epochs = train_run(program, tmp / f"run-{slug}", args)
        rows.append((label, epochs))
        print(f"  done: {name} {label}", file=sys.stderr)
    bp_epochs = rows[0][1]
    limit = f", {args.limit} samples per split" if args.limit else ""
    print(f"### {name}: CIFAR-10{limit}, {args.epochs} epochs, batch 128, SGD nesterov lr {args.lr:g} cosine, torch backend, "
          f"{args.threads} threads\n")
    print("| strategy | test acc | vs bp (points) | s/epoch (prefix) per epoch | max-prefix epochs: speed-up vs bp | "
          "peak MiB (last epoch) | vs bp |\n|---|---|---|---|---|---|---|")
    for label, epochs in rows:
        final = epochs[-1]
        per_epoch = " / ".join(f"{e['epoch_time_s']:.0f} ({e.get('prefix', 0)})" for e in epochs)
        full = [i for i, e in enumerate(epochs) if e.get("prefix", 0) and e["prefix"] == max(
            x.get("prefix", 0) for x in epochs)]
        speedup = (f"{statistics.mean(bp_epochs[i]['epoch_time_s'] for i in full) / statistics.mean(epochs[i]['epoch_time_s'] for i in full):.2f}x"
                   f" (epochs {', '.join(str(i + 1) for i in full)})") if full else "-"
        print(f"| {label} | {final['test_acc']:.4f} | {100 * (final['test_acc'] - bp_epochs[-1]['test_acc']):+.1f} | "
              f"{per_epoch} | {speedup} | {final['peak_memory_mb']:.0f} | "
              f"{final['peak_memory_mb'] / bp_epochs[-1]['peak_memory_mb']:.2f} |")
    print()
    for label, epochs in rows:
        moves = [f"epoch {e['epoch']}: {e['transition']['from']}->{e['transition']['to']} ({e['transition']['reason']})"
                 for e in epochs if "transition" in e]
        if moves:
            print(f"- {label}: {'; '.join(moves)}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,vgg11_bn")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--limit", type=int, help="samples per split (for a quick look)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate (VGG-11-BN needs 0.01 here)")
    parser.add_argument("--keep", type=Path, help="write programs and runs here instead of a temporary directory")
    parser.add_argument("--measure-memory", nargs=3, metavar=("MODEL", "BACKEND", "PREFIX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        model, backend, prefix = args.measure_memory
        measure_peak_rss(model, backend, int(prefix), args.threads)
        return
    if args.keep:  # programs and run directories stay for `llcompile report --measured RUN_DIR`
        args.keep.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            benchmark_model(name, args.keep, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            benchmark_model(name, Path(tmp), args)


if __name__ == "__main__":
    main()
