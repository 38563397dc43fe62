"""What every K=2 dbl cut costs per block: forward MACs, training MACs (cost model) and measured seconds.

For each cut point of the model, dbl with that one cut (`--cuts C`) is compiled and both blocks
are timed training on a synthetic batch in this process (torch backend, CPU, `--threads` threads):
the fastest of `--steps` steps after a warm-up step (the least disturbed by other processes), the
programs taking turns step by step. The lines under the table say where each balance criterion
(`--balance-by macs`, `train-macs`, `train-cost`, and the measured time) would cut (the cut with
the smallest larger block) and how even the blocks are in measured time
(`slower / (sum / 2)`: 1.00 is perfect balance; the 2-process pipeline's efficiency is about its
inverse).

    ./dev bench dbl_cut_balance [--models resnet20,vgg11_bn] [--batch-size 128] [--steps 5] [--threads 1]
                                [--inner-cuts]

With `--inner-cuts`, the cut points inside residual units (`dbl --inner-cuts`) are timed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import llcompile
from llcompile.backends.base import OptimizerConfig
from llcompile.backends.torch.backend import TorchBackend
from llcompile.cost.block_costs import ELEMENT_OP_MACS
from llcompile.models import export
from llcompile.passes.inner_cuts import JoinInnerCutsPass
from llcompile.cost.cost_model import cost_program


def block_seconds(programs: list[llcompile.Program], shape: list[int], batch_size: int,
                  rounds: int) -> list[list[float]]:
    """Per program, per stage: the fewest seconds of one training step on a synthetic batch of samples
    of ``shape``. The programs take turns, one step each per round, so that the load of other
    processes spreads evenly over them; the first round is a warm-up."""
    backend = TorchBackend()
    built = [backend.build(program, OptimizerConfig()) for program in programs]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *shape), dtype=np.float32)
    labels = rng.integers(0, 10, batch_size)
    best = [[float("inf")] * len(stages) for stages in built]
    for round_ in range(rounds + 1):
        for program_best, stages in zip(best, built):
            activation, batch_labels = backend.to_batch(x, labels)
            for index, stage in enumerate(stages):
                started = time.perf_counter()
                activation = stage.train_step(activation, batch_labels, 0.01).output
                if round_ > 0:
                    program_best[index] = min(program_best[index], time.perf_counter() - started)
    return best


def measure(name: str, tmp: Path, args) -> list[str]:
    torch.manual_seed(0)
    path = export(name, tmp / f"{name}.onnx")
    model = llcompile.load(path)
    if args.inner_cuts:  # the cut points and segments of the model with every inner cut joined
        analysis = llcompile.analyze(JoinInnerCutsPass()(llcompile.load(path)).model)
    else:
        analysis = llcompile.analyze(model)
    inner = ", inner cuts too" if args.inner_cuts else ""
    lines = [f"### {name}: batch {args.batch_size}, {args.threads} thread(s), fastest of {args.steps} rounds{inner}",
             "", "| cut | forward MACs/sample (block1 / block2) | training MACs/sample, cost model | "
             "training element ops/sample, cost model | measured s/step | slower / (sum / 2) |",
             "|---|---|---|---|---|---|"]
    programs = [llcompile.transform(model, "dbl", cuts=[cut], boundary_policy="fixed", inner_cuts=args.inner_cuts or None)
                for cut in analysis.cut_points]
    measured = block_seconds(programs, analysis.input_shape[1:], args.batch_size, args.steps)
    rows = []
    for index, (cut, program, seconds) in enumerate(zip(analysis.cut_points, programs, measured), start=1):
        # cut point i starts segment i
        forward = [sum(s.macs for s in analysis.segments[:index]), sum(s.macs for s in analysis.segments[index:])]
        costs = cost_program(program, args.batch_size).stages
        training = [stage.macs()["total"] for stage in costs]
        elements = [_element_ops(stage) for stage in costs]
        train_cost = [macs + ELEMENT_OP_MACS * ops for macs, ops in zip(training, elements)]
        rows.append((cut, forward, training, seconds, train_cost))
        lines.append(f"| {cut} | {forward[0] / 1e6:.1f} / {forward[1] / 1e6:.1f} M | "
                     f"{training[0] / 1e6:.1f} / {training[1] / 1e6:.1f} M | "
                     f"{elements[0] / 1e6:.2f} / {elements[1] / 1e6:.2f} M | {seconds[0]:.3f} / {seconds[1]:.3f} | "
                     f"{max(seconds) / (sum(seconds) / 2):.2f} |")
    for label, column in (("forward MACs", 1), ("training MACs", 2), ("train-cost", 4), ("measured time", 3)):
        best = min(rows, key=lambda row: max(row[column]))
        lines.append(f"- balanced by {label}: cut {best[0]} (measured slower / (sum / 2) "
                     f"{max(best[3]) / (sum(best[3]) / 2):.2f})")
    return lines


def _element_ops(stage) -> int:
    """Element operations per sample of a stage's training step: forward, backward, its aux head's."""
    head = stage.head.element_ops_forward + stage.head.element_ops_backward if stage.head else 0
    return stage.element_ops_forward + stage.element_ops_backward + head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet20,vgg11_bn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inner-cuts", action="store_true", help="also the cut points inside residual units")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print("\n".join(measure(name, Path(tmp), args)) + "\n", flush=True)


if __name__ == "__main__":
    main()
