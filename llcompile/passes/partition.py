"""Cut the model into K blocks at cut points: balanced by a cost per block (``--balance-by``) or at given tensors."""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from llcompile.analysis.segment_costs import SegmentCoster, forward_mac_costs
from llcompile.analysis.structure import ModelAnalysis, Segment, analyze
from llcompile.errors import LLCompileError
from llcompile.frontend.naming import NameScope
from llcompile.program.plan import LABELS, Plan, StageKind, StagePlan
from llcompile.frontend.pass_pipeline import LLCompilePass
from llcompile.util.option_names import option_name


def min_max_partition(count: int, parts: int, group_cost: Callable[[int, int], float]) -> list[tuple[int, int]]:
    """Split items 0..count-1 into ``parts`` contiguous non-empty groups ``(first, last)`` whose largest
    ``group_cost(first, last)`` is the smallest possible; ties go to the earliest split (the classic
    linear-partition dynamic programme, with any group cost: a sum, or a sum plus a hand-off)."""
    inf = float("inf")
    # best[k][i]: smallest largest-group cost of the first i items in k groups; start[k][i]: its last group's start
    best = [[inf] * (count + 1) for _ in range(parts + 1)]
    start = [[0] * (count + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, count + 1):
            for j in range(k - 1, i):
                candidate = max(best[k - 1][j], group_cost(j, i - 1))
                if candidate < best[k][i]:
                    best[k][i], start[k][i] = candidate, j
    groups, i = [], count
    for k in range(parts, 0, -1):
        groups.append((start[k][i], i - 1))
        i = start[k][i]
    return groups[::-1]


class PartitionPass(LLCompilePass):
    """Write a plan of K blocks (stages) into the model; the last block keeps the model's head.

    ``prefix`` > 0 puts the first ``prefix`` segments into a forward-only ``hebbian`` stage
    (HebbianPass rewrites it) and partitions the segments after it into the K blocks. Without
    ``cuts``, the blocks minimise the largest block cost by ``coster`` (forward MACs, or the compiler's
    training cost: ``llcompile.cost.block_costs``);
    the plan's options name the criterion it used (``balance_by``).
    """

    def __init__(self, blocks: int | None = None, cuts: list[str] | None = None, prefix: int = 0,
                 coster: SegmentCoster = forward_mac_costs):
        super().__init__()
        if blocks is not None and cuts is not None and blocks != len(cuts) + 1:
            raise LLCompileError(f"{option_name('blocks', blocks)} disagrees with {len(cuts)} {option_name('cuts')} "
                                f"(that is {len(cuts) + 1} blocks)")
        if prefix < 0:
            raise LLCompileError(f"{option_name('prefix')} must be >= 0, got {prefix}")
        self.blocks = blocks
        self.cuts = cuts
        self.prefix = prefix
        self.coster = coster

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        analysis = analyze(model)
        if not analysis.layers:
            raise LLCompileError("the model has no parametric layer (Conv, Gemm or MatMul with a weight)")
        if analysis.num_classes is None:
            raise LLCompileError(
                f"output {analysis.output!r} is not class logits: expected shape [N, classes] or [N, classes, 1, 1], "
                f"got {analysis.segments[-1].output_shape}")
        if self.prefix >= len(analysis.segments):
            raise LLCompileError(
                f"{option_name('prefix', self.prefix)} leaves no layer to train by gradient: this model has "
                f"{len(analysis.segments)} segments, so the prefix can be at most {len(analysis.segments) - 1}")
        trained = analysis.segments[self.prefix:]
        block_cuts, balance_by = self._choose_cuts(model, analysis, trained)
        boundaries = [trained[0].input, *block_cuts, analysis.output]
        stages = [StagePlan(name=f"block{i + 1}", kind=StageKind.BLOCK, input=boundaries[i], output=boundaries[i + 1])
                  for i in range(len(boundaries) - 1)]
        stages[-1].kind = StageKind.FINAL
        options = {"blocks": len(stages)}
        if balance_by is not None:
            options["balance_by"] = balance_by
        if self.prefix:
            stages.insert(0, StagePlan(name=StageKind.HEBBIAN.value, kind=StageKind.HEBBIAN, input=analysis.input,
                                       output=trained[0].input))
            options["prefix"] = self.prefix
        cuts = [stage.input for stage in stages[1:]]
        Plan(input=analysis.input, output=analysis.output, logits=analysis.logits,
             num_classes=analysis.num_classes, cuts=cuts, stages=stages, labels=NameScope(model.graph).fresh(LABELS),
             options=options).write(model)
        return ir.passes.PassResult(model, True)

    def _choose_cuts(self, model: ir.Model, analysis: ModelAnalysis,
                     trained: list[Segment]) -> tuple[list[str], str | None]:
        """The cuts between the blocks made of the ``trained`` segments (those after the prefix), and the
        criterion that chose them (None: given, or the only way to cut)."""
        valid = [s.input for s in trained[1:]]
        if self.cuts is not None:
            unknown = [c for c in self.cuts if c not in analysis.cut_points]
            if unknown:
                raise LLCompileError(
                    f"not a cut point: {', '.join(unknown)}; valid cut points: "
                    f"{', '.join(analysis.cut_points) or '(none)'}")
            in_prefix = [c for c in self.cuts if c not in valid]
            if in_prefix:
                raise LLCompileError(f"{option_name('cuts')} {', '.join(in_prefix)} lie(s) inside or at the end of the "
                                     f"Hebbian prefix of {self.prefix} segments")
            if len(set(self.cuts)) != len(self.cuts):
                raise LLCompileError(f"{option_name('cuts')} lists a tensor twice: {', '.join(self.cuts)}")
            return sorted(self.cuts, key=valid.index), None
        blocks = 1 if self.blocks is None else self.blocks
        if blocks < 1:
            raise LLCompileError(f"{option_name('blocks')} must be at least 1, got {blocks}")
        if blocks > len(trained):
            raise LLCompileError(
                f"{option_name('blocks', blocks)} is more than this model allows: at most {len(trained)} "
                f"({len(trained) - 1} cut points{' after the prefix' if self.prefix else ''})")
        if blocks in (1, len(trained)):  # one way to cut: nothing to cost
            return (valid if blocks > 1 else []), None
        costs = self.coster(model, analysis)
        groups = min_max_partition(len(trained), blocks,
                                   lambda first, last: costs.block(self.prefix + first, self.prefix + last))
        return [trained[first].input for first, _ in groups[1:]], costs.criterion
