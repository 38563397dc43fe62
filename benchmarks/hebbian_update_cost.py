"""What the cheaper Hebbian updates save: ResNet-20, the default maximum prefix, one step at batch 128.

    ./dev bench hebbian_update_cost [--prefix 5] [--rounds 12] [--threads 2]

Interleaved rounds (so machine noise hits every configuration alike; the first 2 are warm-up) of:
bp; the local-sgd step with the Hebbian update of every sample (the default), with
`--hebbian-subsample` 2, 4, 8, and without the update (the steps `--hebbian-every` skips). Per
configuration the median seconds of the Hebbian stage and of the SGD stage. `--hebbian-every k`
is not timed as a separate program: one update step and k-1 steps without it, its mean step time
is (update + (k - 1) x forward-only) / k from the same medians. The ideal from the MACs, with a
share f of the forward MACs F localized: F + f F / k + 2 (1 - f) F per step (update every k-th
step or from every k-th sample) against bp's 3 F. Prints a markdown table of ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import llcompile
from llcompile.backends import OptimizerConfig
from llcompile.backends.torch.backend import TorchBackend
from llcompile.models import export
from llcompile.cost.cost_model import cost_program


def _step(stages, x, y, update: bool) -> list[float]:
    """Seconds of each stage in one training step."""
    activation, seconds = x, []
    for stage in stages:
        start = time.perf_counter()
        if stage.name == "hebbian":
            activation = stage.train_step(activation, y, 1e-4, update=update).output
        else:
            activation = stage.train_step(activation, y, 0.1).output
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", type=int, default=5, help="segments localized (5: ResNet-20's default maximum)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = export("resnet20", Path(tmp) / "resnet20.onnx")
        programs = {"bp": llcompile.transform(model, "bp")}
        for subsample in (1, 2, 4, 8):
            programs[f"subsample {subsample}"] = llcompile.transform(model, "local-sgd", prefix=args.prefix,
                                                                     hebbian_subsample=subsample)
    localized = cost_program(programs["subsample 1"], 128)
    total = cost_program(programs["bp"], 128)
    share = localized.stages[0].macs_forward / sum(stage.macs_forward for stage in total.stages)
    runs = {name: (TorchBackend().build(program, OptimizerConfig()), True) for name, program in programs.items()}
    runs["no update"] = (runs["subsample 1"][0], False)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times: dict[str, list[list[float]]] = {name: [] for name in runs}
    for i in range(args.rounds + 2):
        for name, (stages, update) in runs.items():
            seconds = _step(stages, x, y, update)
            if i >= 2:
                times[name].append(seconds)
    median = {name: np.median(np.array(t), axis=0) for name, t in times.items()}
    bp = float(median["bp"].sum())
    sgd = float(np.median([m[-1] for name, m in median.items() if name != "bp"]))
    update, forward = float(median["subsample 1"][0]), float(median["no update"][0])
    print(f"ResNet-20, prefix {args.prefix} ({100 * share:.0f} % of the forward MACs localized), batch 128, "
          f"{args.threads} threads, median of {args.rounds} interleaved rounds; bp {bp:.3f} s/step\n")
    print("| Hebbian update | Hebbian stage s | step s | speed-up vs bp | MACs ideal vs bp |\n|---|---|---|---|---|")
    print(f"| - (bp) | - | {bp:.3f} | 1.00x | 1.00x |")

    def row(label: str, hebbian: float, divisor: float) -> None:
        ideal = 3.0 / (1.0 + share / divisor + 2.0 * (1.0 - share))
        print(f"| {label} | {hebbian:.3f} | {hebbian + sgd:.3f} | {bp / (hebbian + sgd):.2f}x | {ideal:.2f}x |")

    row("every step, every sample (default)", update, 1)
    for subsample in (2, 4, 8):
        row(f"`--hebbian-subsample {subsample}`", float(median[f"subsample {subsample}"][0]), subsample)
    for every in (2, 4, 8):
        row(f"`--hebbian-every {every}`", (update + (every - 1) * forward) / every, every)
    row("never (forward only)", forward, float("inf"))
    print(f"\nSGD stage (the same in every local-sgd step): {sgd:.3f} s")


if __name__ == "__main__":
    main()
