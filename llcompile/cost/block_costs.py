"""What a block of consecutive segments costs to train, by the cost model: what PartitionPass balances
(``--balance-by``; the block arithmetic is ``llcompile.analysis.segment_costs``). Criteria:

- ``macs``: forward MACs only (the head, the backward and element ops ignored).
- ``train-macs``: the cost model's training MACs (docs/cost-model.md): forward + dX + dW, aux head.
- ``train-cost``: ``train-macs`` + ``ELEMENT_OP_MACS`` x the cost model's element operations
  (BatchNormalization, ReLU, Add, pooling, the loss, forward and backward): on CPU such an op is
  memory-bound and takes as long as many MACs, and early, wide-activation blocks have many of them.

Pure: the costs come from the cost model of two programs compiled from a copy of the model by the
``compile_program`` the compiler hands over (``transform`` itself: the compiler calls the partition
that calls this, so it cannot be imported here).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from llcompile.analysis.segment_costs import SegmentCoster, SegmentCosts, forward_mac_costs
from llcompile.analysis.structure import ModelAnalysis
from llcompile.cost.cost_model import cost_program
from llcompile.errors import LLCompileError
from llcompile.program.program import Program
from llcompile.util.option_names import option_name

BALANCE_CRITERIA = ("macs", "train-macs", "train-cost")
DEFAULT_BALANCE = "train-cost"  # chosen by measurement: docs/strategies.md, "Balancing the blocks"
# an element operation's time in MACs' time: the least-squares fit of the measured training seconds of both
# blocks at every K=2 cut of ResNet-20, batch 128, one thread (benchmarks/dbl_cut_balance.py, docs/results.md)
ELEMENT_OP_MACS = 80

# (model, strategy, **options) -> Program: llcompile.transform
ProgramCompiler = Callable[..., Program]


def segment_coster(criterion: str, head_options: dict, compile_program: ProgramCompiler) -> SegmentCoster:
    """The function that costs a model's segments by ``criterion``; ``head_options`` are the transform
    options that shape the aux heads and their losses (aux_head, aux_depth, aux_pool, aux_width, aux_subsample,
    aux_loss, seed; the loss terms' weights are left out: they change no cost, and a per-block ramp
    of them could leave one of the costing program's many blocks without a loss)."""
    head_options = {k: v for k, v in head_options.items()
                    if k not in ("aux_recon_weight", "aux_ce_weight", "aux_contrast_weight")}
    if criterion not in BALANCE_CRITERIA:
        raise LLCompileError(f"unknown {option_name('balance_by')} {criterion!r}; choose one of: "
                             f"{', '.join(BALANCE_CRITERIA)}")
    if criterion == "macs":
        return forward_mac_costs

    def cost(model: ir.Model, analysis: ModelAnalysis) -> SegmentCosts:
        try:
            return training_costs(model, analysis, head_options, criterion, compile_program)
        except LLCompileError:  # some cut point takes no aux head (the chosen cuts may avoid it): what
            return forward_mac_costs(model, analysis)  # is always countable; the plan records "macs"

    return cost


def training_costs(model: ir.Model, analysis: ModelAnalysis, head_options: dict, criterion: str,
                   compile_program: ProgramCompiler) -> SegmentCosts:
    """Training MACs (``train-cost``: + ELEMENT_OP_MACS x element operations) per sample, from the cost
    model of dbl with a block per segment (each segment alone) and of bp (no segment starts a block
    but the first)."""
    element_weight = ELEMENT_OP_MACS if criterion == "train-cost" else 0
    per_segment = cost_program(compile_program(model, "dbl", cuts=analysis.cut_points, boundary_policy="fixed",
                                               **head_options))
    end_to_end = cost_program(compile_program(model, "bp"))

    def layer_cost(layer) -> float:
        return layer.macs_total + element_weight * (layer.element_ops_forward + layer.element_ops_backward)

    alone, head = [], []
    for stage in per_segment.stages:
        elements = stage.element_ops_forward + stage.element_ops_backward
        head_elements = stage.head.element_ops_forward + stage.head.element_ops_backward if stage.head else 0
        alone.append(stage.macs()["total"] + element_weight * (elements + head_elements))
        head.append(stage.macs()["aux"] + element_weight * head_elements)
    alone_layers = {layer.name: layer for layer in per_segment.layers}
    segment_of = {layer.name: layer.segment for layer in analysis.layers}
    entry_dx = [0.0] * len(analysis.segments)
    for layer in end_to_end.layers:
        entry_dx[segment_of[layer.name]] += layer_cost(layer) - layer_cost(alone_layers[layer.name])
    return SegmentCosts(criterion=criterion, alone=alone, head=head, entry_dx=entry_dx)
