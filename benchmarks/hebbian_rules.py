"""Which Hebbian rule, activation and rate for LoCal+SGD: ResNet-20 on a CIFAR-10 subset, one run.

    ./dev bench hebbian_rules [--limit 8000] [--epochs 4]

Every configuration trains the same network from the same weights and batches: epoch 1 all on
SGD, from epoch 2 the default maximum prefix (the longest with at most half the forward MACs)
localized. `lr 0` freezes the prefix: the reference a Hebbian rule has to beat. Prints a
markdown table of test accuracy per epoch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import llcompile
from llcompile.models import export
from llcompile.train import TrainConfig, train

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"
CONFIGS = {
    "bp": ("bp", {}),
    "frozen prefix (lr 0)": ("local-sgd", {"hebbian_lr": 0.0}),
    "oja, post, lr 1e-4": ("local-sgd", {"hebbian_lr": 1e-4}),
    "oja, post, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3}),
    "oja, post, lr 1e-2": ("local-sgd", {"hebbian_lr": 1e-2}),
    "oja, pre, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_activation": "pre"}),
    "hebb, post, lr 1e-3": ("local-sgd", {"hebbian_lr": 1e-3, "hebbian_rule": "hebb"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=8000, help="samples per split")
    parser.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"ResNet-20, CIFAR-10 ({args.limit} samples per split), {args.epochs} epochs, batch 128, SGD lr 0.1 "
          f"cosine; local-sgd: prefix from epoch 2 (start_epoch 2, ramp_epochs 1)\n")
    print("| configuration | test acc per epoch | final | vs frozen (points) |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = export("resnet20", tmp / "resnet20.onnx")
        finals = {}
        for i, (label, (strategy, options)) in enumerate(CONFIGS.items()):
            if strategy != "bp":
                options = {**options, "start_epoch": 2, "ramp_epochs": 1}
            program = llcompile.transform(model, strategy, **options).save(tmp / f"program{i}")
            config = TrainConfig(data=args.data, epochs=args.epochs, batch_size=128, threads=args.threads,
                                 data_limit=args.limit)
            history = train(program, config, tmp / f"run{i}", show_progress=False).history
            finals[label] = history[-1]["test_acc"]
            frozen = finals.get("frozen prefix (lr 0)")
            versus = f"{100 * (finals[label] - frozen):+.1f}" if frozen is not None and strategy != "bp" else "-"
            per_epoch = " / ".join(f"{record['test_acc']:.3f}" for record in history)
            print(f"| {label} | {per_epoch} | {finals[label]:.3f} | {versus} |", flush=True)


if __name__ == "__main__":
    main()
