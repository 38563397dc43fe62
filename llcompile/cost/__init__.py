"""The cost model of a training program: MACs, element operations, memory, off-chip traffic
(docs/cost-model.md), and what a block of segments costs to train (what the partition balances).

    cost = cost_program(llcompile.transform("resnet20.onnx", "dbl"))

Pure: nothing here changes a model or a program.
"""

from llcompile.cost.cost_model import ProgramCost, cost_program
from llcompile.cost.traffic import offchip_traffic

__all__ = ["ProgramCost", "cost_program", "offchip_traffic"]
