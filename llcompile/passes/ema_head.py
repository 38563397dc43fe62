"""The ``ema`` aux head: the next block's first segment run with exponentially averaged weights,
after MAN (Su et al., "Momentum Auxiliary Network for Supervised Local Learning", ECCV 2024;
code JunhaoSu0/MAN).

For the block that ends at cut ``c``, the head copies the segment right after ``c`` (the first
residual unit of the next block) twice and adds their outputs:

- the *averaged copy* (``<head>.ema.<weight>``) gets no gradient: after every training step the
  runtime sets each of its weights to ``m * itself + (1 - m) * the segment's trained weight``
  (``momentum`` m, ``train/ema_heads.py``), so it follows the next block as that block learns;
  its BatchNormalization running statistics are its own. The program lists these weights among the
  stage's buffers, so no backend trains them; the error of the head still flows through them into
  the block;
- the *learned copy* (``<head>.<weight>``), trained by the block's loss like any head weight: MAN's
  "learnable bias", which absorbs the difference between what the averaged weights expect and what
  this block gives them.

Both start as copies of the segment's current weights. Then the head reads out as ``fc`` does
(pooling, a fresh classifier). A block whose next segment is the model's last one (the
classifier's) gets the ``fc`` head alone. What is not reproduced: MAN puts InfoPro's heads after
the copies (here ``fc``; ``--aux-loss ce+recon`` adds the decoder on the block's output) and
initialises the copies at random.
"""

from __future__ import annotations

import onnx_ir as ir

from llcompile.analysis.structure import ModelAnalysis, parameter_roles
from llcompile.errors import LLCompileError
from llcompile.frontend.graph_builder import GraphBuilder
from llcompile.passes.augmented_head import copy_segments

# MAN's CIFAR command (--momentum 0.995); its constructor's default is 0.999
DEFAULT_EMA_MOMENTUM = 0.995
EMA_SCOPE = "ema"  # the averaged copy's names: <head prefix>.ema.<original>


def next_segment(analysis: ModelAnalysis, cut: str) -> list[int]:
    """The index of the segment after ``cut`` (in a list), or none where that is the classifier's."""
    outputs = [segment.output for segment in analysis.segments]
    if cut not in outputs[:-1]:
        raise LLCompileError(f"ema aux head: {cut!r} is not a cut point of the model")
    after = outputs.index(cut) + 1
    return [after] if after < len(analysis.segments) - 1 else []


def add_ema_copies(builder: GraphBuilder, analysis: ModelAnalysis, cut: str,
                   x: ir.Value) -> tuple[ir.Value, list[int], dict[str, str], dict[str, str]]:
    """The averaged and the learned copy of the segment after ``cut``, both reading ``x``, summed.
    Returns the sum (``x`` where there is no such segment), the segments copied, every copied
    initializer -> its original, and the averaged weights -> theirs."""
    segments = next_segment(analysis, cut)
    if not segments:
        return x, [], {}, {}
    averaged = GraphBuilder(builder.graph, f"{builder.prefix}.{EMA_SCOPE}")
    x_averaged, averaged_from = copy_segments(averaged, analysis, segments, x)
    x_learned, learned_from = copy_segments(builder, analysis, segments, x)
    trained = {name for name, role in parameter_roles(builder.graph).items() if role == "param"}
    ema = {copy: original for copy, original in averaged_from.items() if original in trained}
    summed = builder.op("Add", [x_averaged, x_learned], "ema_sum")
    summed.type, summed.shape = x_learned.type, x_learned.shape.copy() if x_learned.shape is not None else None
    return summed, segments, {**averaged_from, **learned_from}, ema

