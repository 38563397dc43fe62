"""The cost report: MACs, element operations, memory and off-chip traffic of a training program,
per layer, per stage and per strategy, compared with `bp` (docs/cost-model.md).

    from llcompile.report import build_report, cost_program
    report = build_report("resnet20.onnx", [parse_spec("dbl:blocks=4")])   # the JSON contract, as a dict
    cost = cost_program(llcompile.transform("resnet20.onnx", "dbl"))        # one program's costs

Analysis only: nothing here changes a model or a program.
"""

from llcompile.report.cost_model import ProgramCost, cost_program
from llcompile.report.programs import StrategySpec, parse_spec
from llcompile.report.report import build_report
from llcompile.report.traffic import offchip_traffic

__all__ = ["ProgramCost", "StrategySpec", "build_report", "cost_program", "offchip_traffic", "parse_spec"]
