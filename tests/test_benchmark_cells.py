"""Every cell of the strategies benchmark compiles (on ResNet-20) and can be chosen with --cells, so a
multi-hour run cannot fail at a later cell."""

import sys
from pathlib import Path

import llcompile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from strategies_cifar10 import CELLS, seeded  # noqa: E402


def test_every_strategies_cell_compiles_on_resnet20(zoo_file):
    path = zoo_file("resnet20")
    for label, (strategy, options) in CELLS.items():
        program = llcompile.transform(path, strategy, **seeded(strategy, options, 0))
        assert program.stages, label
        if "blocks" in options and options.get("boundary_policy") != "schedule":
            assert len(program.stages) == options["blocks"], label


def test_every_cell_can_be_named_in_cells():
    assert all("," not in label for label in CELLS)  # --cells is comma-separated
