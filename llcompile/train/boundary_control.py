"""DBL's block boundaries between epochs: the boundary policy's state, its signals and its moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from llcompile.analysis.structure import ModelAnalysis
from llcompile.policies.boundary_decision import BlockSignal, BoundaryState
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.policies.boundary_rules import boundary_rule
from llcompile.policies.settling import layers_settled
from llcompile.program.plan import StageKind
from llcompile.program.program import Stage


@dataclass
class BoundaryControlState:
    """The boundary controller's part of a checkpoint's controller state."""

    entry: int | None = None  # the epoch of the boundary-schedule entry in force
    active: list[str] | None = None  # adaptive, progressive, sliding: the cuts in force
    merged_at: dict[str, int] = field(default_factory=dict)  # adaptive: inactive candidate -> epoch merged
    next_cuts: dict | None = None  # {"cuts", "reason"} for the next epoch
    block_losses: dict[str, float] = field(default_factory=dict)  # adaptive: last epoch's, by output cut
    last_move: int = 0  # progressive, sliding: epoch of the last move (0: none)
    # head_warmup: the cut of each aux head in force that appeared during the run -> the 1-based epoch
    # it appeared in (its warm-up began)
    heads_appeared: dict[str, int] = field(default_factory=dict)


class BoundaryController:
    """Moves the block boundaries by the boundary policy (``options``; None: they never move) and
    warms up the aux heads that appear. ``candidates``: the program's boundaries at transform time."""

    def __init__(self, analysis: ModelAnalysis, candidates: list[str], options: BoundaryPolicy | None,
                 state: BoundaryControlState | None):
        self.options = options
        self.rule = boundary_rule(options) if options is not None else None
        self.segment_layers = [segment.layers for segment in analysis.segments]
        self.segment_of_cut = {segment.input: segment.index for segment in analysis.segments}
        self.cut_points = [segment.input for segment in analysis.segments[1:]]  # where progressive/sliding go
        # adaptive: the boundaries given at transform time are the candidates; progressive and sliding start there
        self.candidates = candidates
        self.state = state or BoundaryControlState(active=list(candidates) if self.from_signals else None)

    @property
    def from_signals(self) -> bool:
        """Whether the policy moves boundaries from the signals of the epochs (adaptive, progressive, sliding)."""
        return self.rule is not None and self.rule.from_signals

    def initial_options(self) -> dict:
        """The transform options of the program the run starts with."""
        return {"blocks": None, "cuts": self.candidates} if self.from_signals else {}

    def options_for(self, prefix: int) -> dict:
        """The transform options of the boundaries in force, with this Hebbian ``prefix``."""
        if self.state.entry is not None:
            return self.options.entry_for(self.state.entry).options()
        if self.state.active is not None:  # a moving policy; a cut the Hebbian prefix has passed is no boundary
            return {"blocks": None, "cuts": [c for c in self.state.active if self.segment_of_cut[c] > prefix]}
        return {}

    def begin_epoch(self, epoch: int) -> str | None:
        """Apply what is decided for 1-based ``epoch``: why the boundaries change (None: they do not)."""
        if self.rule is None:
            return None
        state, reason = self.state, None
        decision = self.rule.decide(BoundaryState(epoch, ended=False))
        if decision is not None and decision.entry is not None and decision.entry.epoch != state.entry:
            state.entry, reason = decision.entry.epoch, decision.reason
        if state.next_cuts is not None:
            state.active = state.next_cuts["cuts"]
            reason = f"{self.options.boundary_policy}: {state.next_cuts['reason']}"
            state.next_cuts = None
        return reason

    def start_warmups(self, epoch: int, old_cuts: list[str], new_cuts: list[str]) -> dict | None:
        """A head at a cut that is a boundary from ``epoch`` on, and was none before, warms up from it;
        the warm-ups begun ({"cuts", "epochs"}), None if none."""
        if self.options is None or not self.options.head_warmup or epoch == 1:  # epoch 1: every block is new
            return None
        appeared = {cut: epoch for cut in new_cuts if cut not in old_cuts}
        self.state.heads_appeared = {**{cut: first for cut, first in self.state.heads_appeared.items()
                                        if cut in new_cuts}, **appeared}
        return {"cuts": list(appeared), "epochs": self.options.head_warmup} if appeared else None

    def warming_cuts(self, epoch: int, step: int, steps_per_epoch: int) -> set[str]:
        """The cuts whose aux head still trains alone at ``step`` of 0-based ``epoch`` (``head_warmup``)."""
        if not self.state.heads_appeared:
            return set()
        length = math.ceil(self.options.head_warmup * steps_per_epoch)
        return {cut for cut, first in self.state.heads_appeared.items()
                if (epoch + 1 - first) * steps_per_epoch + step < length}

    def end_epoch(self, epoch: int, prefix: int, per_lr: list[dict[str, float]], stages: list[Stage],
                  stage_metrics: dict[str, dict], activation_share: Callable[[list[str]], float]) -> dict | None:
        """The policy's decision after 1-based ``epoch`` (applied when the next one begins); its signals
        for the epoch's record (None: the policy reads none).

        ``per_lr``: every epoch's update norms per unit of its mean learning rate (``per_unit_lr``);
        ``stages``, ``stage_metrics``: the epoch's program stages and their loss and accuracy."""
        if not self.from_signals:
            return None
        state = self.state
        trained = [s for s in stages if s.kind != StageKind.HEBBIAN and s.name in stage_metrics]
        threshold = self.options.setting("settle_threshold")
        held = self.warming_cuts(epoch - 1, 0, 1)  # blocks held during the epoch: their norms say nothing
        settled = {cut: self._block_end(cut) not in held
                   and layers_settled(self._layers_before(cut, prefix), per_lr, threshold)
                   for cut in dict.fromkeys([*self.candidates, *state.active])}
        signals = BoundaryState(
            epoch, active=state.active, candidates=self.candidates,
            cut_points=[c for c in self.cut_points if self.segment_of_cut[c] > prefix],
            blocks=[BlockSignal(s.output if s.kind != StageKind.FINAL else None, stage_metrics[s.name]["loss"],
                                stage_metrics[s.name]["acc"], state.block_losses.get(s.output)) for s in trained],
            settled=settled, merged_at=state.merged_at, last_move=state.last_move,
            block_losses={s.output: stage_metrics[s.name]["loss"] for s in trained}, activation_share=activation_share)
        decision = self.rule.decide(signals)
        for name, value in decision.memory.items():
            setattr(state, name, value)
        if decision.active is not None:
            state.next_cuts = {"cuts": decision.active, "reason": decision.reason}
        return {**decision.signals, "decision": decision.reason or "no change"}

    def _block_end(self, cut: str) -> str | None:
        """The cut that ends the block holding ``cut`` (itself when active; None: the final block)."""
        if cut in self.state.active:
            return cut
        later = [c for c in self.state.active if self.segment_of_cut[c] > self.segment_of_cut[cut]]
        return min(later, key=self.segment_of_cut.get, default=None)

    def _layers_before(self, cut: str, prefix: int) -> list[str]:
        """The layers from the start of the block that holds ``cut`` (inactive), or ends at it (active),
        up to ``cut``."""
        end = self.segment_of_cut[cut]
        starts = [self.segment_of_cut[c] for c in self.state.active if self.segment_of_cut[c] < end]
        start = max([*starts, prefix])  # a cut the prefix has passed starts no block
        return [layer for layers in self.segment_layers[start:end] for layer in layers]
