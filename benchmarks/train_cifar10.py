"""ResNet-20 on CIFAR-10 (the shared zip): bp vs dbl (K=4, FC heads), torch and ort backends,
an equal short budget, all from one run; plus the torch backend's step time against a plain
hand-written PyTorch training loop of the same network.

    ./dev bench train_cifar10 [--epochs 3] [--data cifar10:../shared/data/cifar10-jpeg.zip]

Each training run is a separate `llcompile train` process, so its peak memory (resident set,
sampled) is its own. Prints markdown tables.
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
from llcompile.data import BatchLoader, load_dataset, measure_loader_throughput
from llcompile.models import build, export

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"


def train_run(program: Path, run_dir: Path, backend: str, args) -> dict:
    command = [sys.executable, "-m", "llcompile", "train", str(program), "--data", args.data,
               "--epochs", str(args.epochs), "--batch-size", "128", "--backend", backend, "--threads",
               str(args.threads), "--run-dir", str(run_dir), "--quiet", "--format", "json", "--seed", "0"]
    if args.limit:
        command += ["--data-limit", str(args.limit)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def loader_images_per_s(args) -> float:
    """The input pipeline alone: decoded, augmented, normalised batches of 128 per second x 128."""
    dataset = load_dataset(args.data, (3, 32, 32), 10, limit=args.limit)
    return measure_loader_throughput(BatchLoader(dataset, "train", 128, seed=0, epoch=0), max_steps=100)


def step_time_ratio(program: Path, args, steps: int = 20) -> tuple[float, float]:
    """Median seconds per SGD step at batch 128: generated bp module vs the hand-written module."""
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, (3, 32, 32), 10, limit=args.limit or 2560)
    loader = BatchLoader(dataset, "train", 128, seed=0, epoch=0)
    batches = [loader.batch(i) for i in range(min(len(loader), 8))]
    torch.manual_seed(0)
    plain = build("resnet20")
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    (stage,) = TorchBackend().build(llcompile.Program.load(program), OptimizerConfig())

    def plain_step(x, y):
        plain_opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(plain(x), y).backward()
        plain_opt.step()

    plain.train()
    times = {"plain": [], "llcompile": []}
    for i in range(steps + 3):  # interleaved, the first 3 are warm-up
        x, y = (torch.from_numpy(a) for a in batches[i % len(batches)])
        for name, step in (("plain", lambda: plain_step(x, y)), ("llcompile", lambda: stage.train_step(x, y, 0.1))):
            start = time.perf_counter()
            step()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["plain"]), statistics.median(times["llcompile"])


def stage_step_times(programs: dict[str, Path], args, steps: int = 20) -> dict[str, list[float]]:
    """Median seconds of each stage's train_step at batch 128 (random data), strategies interleaved."""
    torch.set_num_threads(args.threads)
    built = {name: TorchBackend().build(llcompile.Program.load(p), OptimizerConfig()) for name, p in programs.items()}
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times: dict[str, list[list[float]]] = {name: [] for name in built}
    for i in range(steps + 3):
        for name, stages in built.items():
            activation, per_stage = x, []
            for stage in stages:
                start = time.perf_counter()
                activation = stage.train_step(activation, y, 0.1).output
                per_stage.append(time.perf_counter() - start)
            if i >= 3:
                times[name].append(per_stage)
    return {name: np.median(np.array(t), axis=0).tolist() for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--limit", type=int, help="samples per split (for a quick look)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="torch,ort")
    parser.add_argument("--step-times-only", action="store_true", help="skip the training runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = export("resnet20", tmp / "resnet20.onnx")
        programs = {"bp": llcompile.transform(model, "bp").save(tmp / "bp"),
                    "dbl K=4 fc": llcompile.transform(model, "dbl", blocks=4).save(tmp / "dbl")}
        plain_s, generated_s = step_time_ratio(programs["bp"], args)
        print(f"## Step time, batch 128, {args.threads} threads (median of 20 interleaved steps)\n")
        print("| loop | s/step | ratio |\n|---|---|---|")
        print(f"| plain PyTorch (hand-written ResNet-20) | {plain_s:.3f} | 1.00 |")
        print(f"| llcompile torch backend, bp | {generated_s:.3f} | {generated_s / plain_s:.2f} |\n")
        per_stage = stage_step_times(programs, args)
        print("| strategy | s/step (torch, per-stage sum) | vs bp | per stage |\n|---|---|---|---|")
        for name, seconds in per_stage.items():
            print(f"| {name} | {sum(seconds):.3f} | {sum(seconds) / sum(per_stage['bp']):.2f} | "
                  f"{' / '.join(f'{s:.3f}' for s in seconds)} |")
        print()
        if args.step_times_only:
            return
        loader_rate = loader_images_per_s(args)
        print(f"Input pipeline alone (crop + flip + normalise, batch 128): {loader_rate:,.0f} images/s, "
              f"{loader_rate * generated_s / 128:.0f}x what one training step consumes.\n")
        rows = []
        for backend in args.backends.split(","):
            for name, program in programs.items():
                summary = train_run(program, tmp / f"run-{backend}-{name.split()[0]}", backend, args)
                epochs = summary["epochs"]
                rows.append((name, backend, summary["test_acc"], np.mean([e["epoch_time_s"] for e in epochs]),
                             max(e["peak_memory_mb"] for e in epochs),
                             [round(e["test_acc"], 4) for e in epochs],
                             {s: round(v["acc"], 3) for s, v in epochs[-1]["stages"].items()}))
                print(f"  done: {name} on {backend}", file=sys.stderr)
        limit = f", {args.limit} samples per split" if args.limit else ""
        print(f"## ResNet-20, CIFAR-10 ({args.data.split(':', 1)[0]}{limit}), {args.epochs} epochs, batch 128, "
              f"SGD nesterov lr 0.1 cosine, {args.threads} threads\n")
        print("| strategy | backend | test acc | s/epoch | s/epoch vs bp | peak MiB | vs bp | test acc per epoch | "
              "train acc per block (last epoch) |\n|---|---|---|---|---|---|---|---|---|")
        for name, backend, acc, seconds, peak, per_epoch, blocks in rows:
            bp = next(r for r in rows if r[0] == "bp" and r[1] == backend)
            print(f"| {name} | {backend} | {acc:.4f} | {seconds:.1f} | {seconds / bp[3]:.2f} | {peak:.0f} | "
                  f"{peak / bp[4]:.2f} | {per_epoch} | {blocks} |")


if __name__ == "__main__":
    main()
