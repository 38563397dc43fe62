"""After every training step, move each ``ema`` aux head's averaged weights towards the weights they
follow (``passes/ema_head.py``): ``averaged <- m * averaged + (1 - m) * trained``, with the head's
momentum m, the trained weights as the step left them. The two live in different stages (the
head's block and the next one), so this is the runtime's work, not a graph's."""

from __future__ import annotations

from dataclasses import dataclass

from llcompile.backends.base import TrainableStage
from llcompile.program.program import Program


@dataclass(frozen=True)
class AveragedHead:
    stage: int  # the index of the stage whose head holds the averaged weights
    source: int  # the index of the stage that trains the weights they follow
    follows: dict[str, str]  # averaged weight -> the trained one
    momentum: float


def averaged_heads(program: Program) -> list[AveragedHead]:
    """The program's ema heads, each with the stage that trains what it follows."""
    owner = {name: index for index, stage in enumerate(program.stages) for name in stage.params}
    heads = []
    for index, stage in enumerate(program.stages):
        if stage.head is None or not stage.head.ema:
            continue
        sources = {owner[original] for original in stage.head.ema.values()}
        if len(sources) != 1:  # the next segment lies in the next stage, whole
            raise AssertionError(f"internal error: {stage.name}'s ema head follows weights of stages {sources}")
        heads.append(AveragedHead(index, sources.pop(), dict(stage.head.ema), stage.head.momentum))
    return heads


def update_averaged_heads(heads: list[AveragedHead], stages: list[TrainableStage]) -> None:
    """One step of every head's exponential average."""
    for head in heads:
        trained = stages[head.source].arrays(head.follows.values())
        own = stages[head.stage].arrays(head.follows)
        m = head.momentum
        stages[head.stage].load_state({copy: m * own[copy] + (1 - m) * trained[original]
                                       for copy, original in head.follows.items()})
