"""What a block of consecutive segments costs: the shape PartitionPass balances, and the one cost
the analysis alone can give (forward MACs). The training costs are the cost model's
(``llcompile.cost.block_costs``), handed to the partition by the compiler.

A block of segments ``first..last`` costs what each of its segments costs trained as a block of its
own (forward, dW, dX, aux head), less the aux heads of all but its last segment (only the block's
output has a head) and plus the dX of the layers reading each inner segment's input (the block's
first segment skips it: no error leaves a block).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from llcompile.analysis.structure import ModelAnalysis


@dataclass(frozen=True)
class SegmentCosts:
    """Per segment: ``alone``, its cost trained as a block of its own, aux head included; ``head``, its
    aux head's (0 for the last segment, trained by the model's loss); ``entry_dx``, the dX of the
    layers that read its input, which a block starting at it does not compute; ``criterion``, what
    they count (a ``--balance-by`` value)."""
    criterion: str
    alone: list[float]
    head: list[float]
    entry_dx: list[float]

    def block(self, first: int, last: int) -> float:
        """The cost of one block made of segments ``first..last``."""
        return (sum(self.alone[first:last + 1]) - sum(self.head[first:last])
                + sum(self.entry_dx[first + 1:last + 1]))


SegmentCoster = Callable[[ir.Model, ModelAnalysis], SegmentCosts]


def forward_mac_costs(model: ir.Model, analysis: ModelAnalysis) -> SegmentCosts:
    """``--balance-by macs``: each segment's forward MACs (the head, the backward and element ops ignored)."""
    zeros = [0.0] * len(analysis.segments)
    return SegmentCosts(criterion="macs", alone=[float(s.macs) for s in analysis.segments], head=zeros,
                        entry_dx=zeros)
