"""Wall time of `transform` (load + canonicalise + passes + emit, in memory) on zoo models.

The runtime re-runs these passes whenever block boundaries move, so compiling must stay cheap.
Targets (issue 2): ResNet-56 under 1 s, ResNet-18 under 2 s on the 2-core CPU.

    ./dev bench transform_speed [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import llcompile
from llcompile.models import export

CASES = [  # model, strategy, options, target seconds
    ("resnet56", "bp", {}, 1.0),
    ("resnet56", "dbl", {"blocks": 4}, 1.0),
    ("resnet56", "dbl", {"blocks": 8, "aux_head": "conv"}, 1.0),
    ("resnet18", "bp", {}, 2.0),
    ("resnet18", "dbl", {"blocks": 4}, 2.0),
    ("mobilenetv2", "dbl", {"blocks": 4}, None),
]


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in dict.fromkeys(c[0] for c in CASES):
            torch.manual_seed(0)
            files[name] = export(name, Path(tmp) / f"{name}.onnx")
        print("| model | strategy | options | load s | transform s (load included) | save s | target | ok |")
        print("|---|---|---|---|---|---|---|---|")
        for name, strategy, options, target in CASES:
            path = files[name]
            load_s = median_seconds(lambda: llcompile.load(path), args.repeats)
            transform_s = median_seconds(lambda: llcompile.transform(path, strategy, **options), args.repeats)
            program = llcompile.transform(path, strategy, **options)
            save_s = median_seconds(lambda: program.save(Path(tmp) / "prog", force=True), args.repeats)
            ok = "" if target is None else ("yes" if transform_s < target else "NO")
            print(f"| {name} | {strategy} | {options or ''} | {load_s:.3f} | {transform_s:.3f} | {save_s:.3f} | "
                  f"{'' if target is None else f'< {target:g} s'} | {ok} |")


if __name__ == "__main__":
    main()
