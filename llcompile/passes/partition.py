"""Cut the model into K blocks at cut points, balanced by forward MACs or at given tensors."""

from __future__ import annotations

import onnx_ir as ir

from llcompile.analysis import ModelAnalysis, analyze
from llcompile.errors import LLCompileError
from llcompile.naming import NameScope
from llcompile.plan import LABELS, Plan, StagePlan


def balanced_boundaries(costs: list[int], parts: int) -> list[int]:
    """Split ``costs`` into ``parts`` contiguous groups minimising the largest group sum.

    Returns the start index of every group but the first (classic linear-partition DP).
    """
    n = len(costs)
    prefix = [0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[k][i]: smallest max-group-sum for the first i items in k groups; cut[k][i]: last start
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                candidate = max(best[k - 1][j], prefix[i] - prefix[j])
                if candidate < best[k][i]:
                    best[k][i], cut[k][i] = candidate, j
    starts, i = [], n
    for k in range(parts, 0, -1):
        i = cut[k][i]
        starts.append(i)
    return sorted(starts)[1:]


class PartitionPass(ir.passes.InPlacePass):
    """Write a plan of K blocks (stages) into the model; the last block keeps the model's head."""

    def __init__(self, blocks: int | None = None, cuts: list[str] | None = None):
        super().__init__()
        if blocks is not None and cuts is not None and blocks != len(cuts) + 1:
            raise LLCompileError(f"--blocks {blocks} disagrees with {len(cuts)} --cuts (that is {len(cuts) + 1} blocks)")
        self.blocks = blocks
        self.cuts = cuts

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        analysis = analyze(model)
        if not analysis.layers:
            raise LLCompileError("the model has no parametric layer (Conv, Gemm or MatMul with a weight)")
        if analysis.num_classes is None:
            raise LLCompileError(
                f"output {analysis.output!r} is not class logits: expected shape [N, classes] or [N, classes, 1, 1], "
                f"got {analysis.segments[-1].output_shape}")
        cuts = self._choose_cuts(analysis)
        boundaries = [analysis.input, *cuts, analysis.output]
        stages = [StagePlan(name=f"block{i + 1}", kind="block", input=boundaries[i], output=boundaries[i + 1])
                  for i in range(len(boundaries) - 1)]
        stages[-1].kind = "final"
        Plan(input=analysis.input, output=analysis.output, logits=analysis.logits,
             num_classes=analysis.num_classes, cuts=cuts, stages=stages, labels=NameScope(model.graph).fresh(LABELS),
             options={"blocks": len(stages)}).write(model)
        return ir.passes.PassResult(model, True)

    def _choose_cuts(self, analysis: ModelAnalysis) -> list[str]:
        valid = analysis.cut_points
        if self.cuts is not None:
            unknown = [c for c in self.cuts if c not in valid]
            if unknown:
                raise LLCompileError(
                    f"not a cut point: {', '.join(unknown)}; valid cut points: {', '.join(valid) or '(none)'}")
            if len(set(self.cuts)) != len(self.cuts):
                raise LLCompileError(f"--cuts lists a tensor twice: {', '.join(self.cuts)}")
            return sorted(self.cuts, key=valid.index)
        blocks = 1 if self.blocks is None else self.blocks
        if blocks < 1:
            raise LLCompileError(f"--blocks must be at least 1, got {blocks}")
        if blocks > len(analysis.segments):
            raise LLCompileError(
                f"--blocks {blocks} is more than this model allows: at most {len(analysis.segments)} "
                f"({len(valid)} cut points)")
        starts = balanced_boundaries([s.macs for s in analysis.segments], blocks)
        return [analysis.segments[i].input for i in starts]
