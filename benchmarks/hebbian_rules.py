"""Which Hebbian rule, activation and rate for LoCal+SGD: a zoo model on a CIFAR-10 subset, over seeds.

    ./dev bench hebbian_rules [--model resnet20] [--limit 8000] [--epochs 4] [--start-epoch 2] [--seeds 3]
                              [--configs "frozen prefix (lr 0);..."]

Every configuration trains the same network from the same weights and batches for a seed (the seed
sets the initial weights and the batch order): the first epochs all on SGD, from --start-epoch the
default maximum prefix (the longest with at most half the forward MACs) localized. `lr 0` freezes the
prefix: the reference a Hebbian rule has to beat. Prints one line per run as it finishes, then a
markdown table of the final test accuracy, mean ± std (sample std) over the seeds, its difference
from the frozen prefix and from bp, and the last epoch's training time over bp's (the late-epoch
speed-up, measured: ratios of one machine's timings, so meaningful only on a quiet machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import llcompile
from llcompile.models import export
from llcompile.train import TrainConfig, train
from local_sgd_cifar10 import SHARED_ZIP
from strategies_cifar10 import DEFAULT_LR  # the peak SGD rate per model (VGG-11-BN diverges at 0.05 and above)

FROZEN = "frozen prefix (lr 0)"
CONFIGS = {
    "bp": ("bp", {}),
    FROZEN: ("local-sgd", {"hebbian_lr": 0.0}),
    "oja, post, lr 1e-4": ("local-sgd", {"hebbian_lr": 1e-4}),
    "oja, post, lr 1e-4, every 4": ("local-sgd", {"hebbian_lr": 1e-4, "hebbian_every": 4}),
    "oja, post, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3}),
    # weak supervision (halve the localized rate after an epoch whose loss rose) off: does it act?
    "oja, post, lr 1e-3, no weak supervision": ("local-sgd", {"hebbian_lr": 1e-3, "weak_supervision": "none"}),
    "oja, post, lr 1e-2": ("local-sgd", {"hebbian_lr": 1e-2}),
    "oja, post, lr 1e-2, no weak supervision": ("local-sgd", {"hebbian_lr": 1e-2, "weak_supervision": "none"}),
    "oja, pre, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_activation": "pre"}),
    "hebb, post, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_rule": "hebb"}),
    "sanger, post, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_rule": "sanger"}),
    "sanger, pre, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_rule": "sanger", "hebbian_activation": "pre"}),
    "softhebb, pre, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_rule": "softhebb",
                                             "hebbian_activation": "pre"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", help="a zoo model (llcompile models list)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--start-epoch", type=int, default=2, help="the first epoch with a localized prefix")
    parser.add_argument("--lr", type=float, help="peak SGD learning rate [default: 0.1; VGG-11-BN 0.01]")
    parser.add_argument("--limit", type=int, default=8000, help="samples per split")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--configs", default=";".join(CONFIGS), help="labels of CONFIGS separated by ';'")
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    labels = args.configs.split(";")
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; choose from {list(CONFIGS)}")
    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.model, 0.1)
    print(f"{args.model}, CIFAR-10 ({args.limit} samples per split), {args.epochs} epochs, batch 128, SGD lr {lr} "
          f"cosine, {args.threads} thread(s), seeds 0..{args.seeds - 1}; local-sgd: prefix from epoch "
          f"{args.start_epoch} (ramp_epochs 1)\n", flush=True)
    finals: dict[str, list[float]] = {label: [] for label in labels}
    last_epoch_s: dict[str, list[float]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = export(args.model, tmp / f"{args.model}-{seed}.onnx")
            for i, label in enumerate(labels):
                strategy, options = CONFIGS[label]
                if strategy != "bp":  # an update at every step unless the label says otherwise
                    options = {"hebbian_every": 1, **options, "start_epoch": args.start_epoch, "ramp_epochs": 1}
                program = llcompile.transform(model, strategy, **options).save(tmp / f"program-{seed}-{i}")
                config = TrainConfig(data=args.data, epochs=args.epochs, batch_size=128, lr=lr, threads=args.threads,
                                     data_limit=args.limit, seed=seed)
                history = train(program, config, tmp / f"run-{seed}-{i}", show_progress=False).history
                finals[label].append(history[-1]["test_acc"])
                last_epoch_s[label].append(history[-1]["epoch_time_s"])
                per_epoch = " / ".join(f"{record['test_acc']:.3f}" for record in history)
                factors = " / ".join(f"{record['hebbian_lr_factor']:g}" for record in history
                                     if "hebbian_lr_factor" in record)
                print(f"seed {seed} | {label} | {per_epoch} | last epoch {history[-1]['epoch_time_s']:.1f} s"
                      f"{' | weak-supervision factor ' + factors if factors else ''}", flush=True)
    print("\n| configuration | final test acc (mean ± std) | vs frozen (points) | vs bp (points) "
          "| last epoch's time, bp's / this |\n|---|---|---|---|---|")
    for label in labels:
        accs = finals[label]
        versus_frozen = _difference(accs, finals.get(FROZEN)) if label not in (FROZEN, "bp") else "-"
        versus_bp = _difference(accs, finals.get("bp")) if label != "bp" else "-"
        speed_up = "-"
        if "bp" in last_epoch_s and label != "bp":
            ratios = [b / t for b, t in zip(last_epoch_s["bp"], last_epoch_s[label])]
            speed_up = f"{statistics.mean(ratios):.2f}x ± {_std(ratios):.2f}"
        print(f"| {label} | {statistics.mean(accs):.3f} ± {_std(accs):.3f} | {versus_frozen} | {versus_bp} "
              f"| {speed_up} |")


def _difference(accs: list[float], reference: list[float] | None) -> str:
    """Mean ± std over seeds of the per-seed difference in points, or '-' without the reference."""
    if not reference:
        return "-"
    diffs = [100 * (a - r) for a, r in zip(accs, reference)]
    return f"{statistics.mean(diffs):+.1f} ± {_std(diffs):.1f}"


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
