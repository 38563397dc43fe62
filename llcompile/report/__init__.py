"""The cost report: MACs, element operations, memory and off-chip traffic of training programs,
per layer, per stage and per strategy, compared with `bp` (docs/cost-model.md), and its renderings.

    from llcompile.report import build_report, parse_spec
    report = build_report("resnet20.onnx", [parse_spec("dbl:blocks=4")])   # the JSON contract, as a dict

Analysis only: nothing here changes a model or a program. The numbers come from ``llcompile.cost``.
"""

from llcompile.report.programs import StrategySpec, parse_spec
from llcompile.report.report import build_report

__all__ = ["StrategySpec", "build_report", "parse_spec"]
