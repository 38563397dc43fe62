"""What moving block boundaries costs the runtime: re-emitting the program for a new cut set
(`compiler.recompile`) and building its stages, per backend, on a zoo model.

    ./dev bench boundary_switch [--model resnet20] [--repeats 5]

Prints a markdown table: median seconds over the switches K=4 -> each 3-block cut set -> K=4 ...,
the slowest (ORT: generating the artifacts of a cut set not yet in its cache) and the first build
of the process (imports, first code generation) shown apart.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import llcompile
from llcompile.backends import OptimizerConfig, make_backend
from llcompile.compiler.transform import recompile
from llcompile.models import export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = export(args.model, Path(tmp) / f"{args.model}.onnx")
        program = llcompile.transform(model, "dbl", blocks=4)
        cut_sets = [[c for c in program.cuts if c != dropped] for dropped in program.cuts]
        print(f"### {args.model}: switching block boundaries (K=4 <-> 3 blocks), median of {args.repeats} rounds\n")
        print("| backend | re-emit s | build s | slowest build s | first build in the process s |\n"
              "|---|---|---|---|---|")
        for name in ("torch", "ort"):
            backend = make_backend(name, "cpu", "eager")
            emit_s, build_s = [], []
            start = time.perf_counter()
            backend.build(program, OptimizerConfig())
            first = time.perf_counter() - start
            for _ in range(args.repeats):
                for cuts in cut_sets:
                    start = time.perf_counter()
                    switched = recompile(program, blocks=None, cuts=cuts)
                    emitted = time.perf_counter()
                    backend.build(switched, OptimizerConfig())
                    emit_s.append(emitted - start)
                    build_s.append(time.perf_counter() - emitted)
            print(f"| {name} | {statistics.median(emit_s):.3f} | {statistics.median(build_s):.3f} | "
                  f"{max(build_s):.3f} | {first:.3f} |")


if __name__ == "__main__":
    main()
