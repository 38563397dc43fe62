"""Predicted activation memory (the cost report's rule) against what torch's autograd keeps.

For each strategy the torch backend trains one step of the compiled program with
``saved_tensors_hooks`` recording every tensor autograd saves (distinct storages, parameters and
buffers excluded); the cost report predicts the same per stage from the graph alone. Prints a
markdown table: per-stage bytes, the peak, and the peak's ratio to bp, predicted and measured.

    ./dev bench activation_memory [--model resnet20] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import llcompile
from llcompile.models import export
from llcompile.cost import cost_program
from llcompile.report.saved_tensors import measure_saved_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = llcompile.load(export(args.model, Path(tmp) / f"{args.model}.onnx"))
    half = len(llcompile.analyze(model).segments) // 2
    cases = [("bp", {}), ("dbl", {"blocks": 4}), ("local-sgd", {"prefix": half}),
             ("dbl-hebbian", {"prefix": half, "blocks": 2})]
    rows = []
    for name, options in cases:
        if name not in llcompile.STRATEGIES:
            continue
        program = llcompile.transform(model, name, **options)
        predicted = [s.activation_bytes for s in cost_program(program, batch_size=args.batch_size).stages]
        measured = measure_saved_bytes(program, args.batch_size)
        rows.append((name, options, predicted, measured))
    bp_predicted, bp_measured = max(rows[0][2]), max(rows[0][3])
    mib = 2**20
    print(f"{args.model}, batch {args.batch_size}: activations kept for the backward pass, MiB")
    print()
    print("| strategy | per stage, predicted | per stage, measured (torch) | peak predicted | peak measured | "
          "predicted / bp | measured / bp |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, options, predicted, measured in rows:
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        print(f"| {label} | {' / '.join(f'{b / mib:.2f}' for b in predicted)} | "
              f"{' / '.join(f'{b / mib:.2f}' for b in measured)} | {max(predicted) / mib:.2f} | "
              f"{max(measured) / mib:.2f} | {max(predicted) / bp_predicted:.3f} | {max(measured) / bp_measured:.3f} |")


if __name__ == "__main__":
    main()
