"""What changes between epochs: the Hebbian prefix (LoCal+SGD) and the block boundaries (DBL).

``ProgramController`` decides each epoch's Hebbian prefix (``llcompile.policies.learning_mode``) and block
boundaries (``llcompile.policies.boundary_policy``), keeps the weak-supervision factor, and hands the loop
the program for them (re-emitted with ``recompile`` when they move). Its state is plain JSON, kept in
checkpoints, so a resumed run decides exactly as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import onnx_ir as ir

from llcompile.policies.adaptive_boundaries import BlockSignal, decide
from llcompile.analysis.structure import analyze
from llcompile.policies.boundary_policy import POLICY_SETTINGS, BoundaryPolicy
from llcompile.compiler.transform import recompile
from llcompile.policies.learning_mode import LearningMode, dynamic_prefix, static_prefix, weak_supervision_factor
from llcompile.policies.moving_boundaries import choose, progressive_moves, sliding_moves
from llcompile.program.program import Program
from llcompile.cost.cost_model import cost_program
from llcompile.policies.settling import layers_settled, per_unit_lr

ACTIVATION_BATCH = 128  # kept activations grow linearly with the batch: any size gives the same shares


def update_norms(before: dict[str, np.ndarray], after: dict[str, np.ndarray], weights: dict[str, str]) -> dict:
    """``||W_after - W_before|| / ||W_before||`` per layer; ``weights`` maps layer -> weight name."""
    norms = {}
    for layer, weight in weights.items():
        if weight in before and weight in after:
            old = before[weight].astype(np.float64)
            norms[layer] = float(_norm(after[weight] - old) / max(_norm(old), 1e-30))
    return norms


def _norm(values: np.ndarray) -> float:
    # numpy's pairwise sum, not np.linalg.norm: BLAS's dot sums in an order that depends on its
    # thread count, and the norms decide program moves, which must not depend on how many
    # processes or threads a run has
    return float(np.sqrt(np.sum(np.square(values))))


def _block_cuts(program: Program) -> list[str]:
    """The boundaries between the blocks trained by gradient (the end of a Hebbian prefix is none)."""
    return [s.input for s in program.stages if s.kind != "hebbian"][1:]


def _key(changes: dict) -> str:
    """The cache key of a program re-emitted with these option ``changes``."""
    return json.dumps(changes, sort_keys=True)


class ProgramController:
    """Between epochs: the Hebbian prefix (LoCal+SGD's learning mode, ``learning``) and the block
    boundaries (DBL's boundary policy, ``boundaries``) the next epoch trains with; the program for
    them, re-emitted when either moves. Its state is plain JSON, kept in checkpoints."""

    def __init__(self, program: Program, learning: LearningMode | None, boundaries: BoundaryPolicy | None,
                 state: dict | None = None):
        self.base = dataclasses.replace(program, stages=[])  # what recompile reads; its stages' weights are not kept
        self.learning = learning
        self.boundaries = boundaries
        analysis = analyze(ir.from_proto(program.eval_model))
        # the transition layer of prefix p: the first layer of segment p
        self.segment_layers = [segment.layers for segment in analysis.segments]
        self.transition_layers = [layers[0] for layers in self.segment_layers]
        self.segment_of_cut = {segment.input: segment.index for segment in analysis.segments}
        self.cut_points = [segment.input for segment in analysis.segments[1:]]  # where progressive/sliding go
        # adaptive: the boundaries given at transform time are the candidates; progressive and sliding start there
        self.candidates = _block_cuts(program)
        moving = boundaries is not None and boundaries.boundary_policy in POLICY_SETTINGS
        state = state or {"prefix": program.options.get("prefix", 0), "factor": 1.0, "next": None,
                          "entry": None, "moved": {}, "active": list(self.candidates) if moving else None,
                          "merged_at": {}, "next_cuts": None, "block_losses": {}, "last_move": 0,
                          "heads_appeared": {}}
        self.prefix: int = state["prefix"]
        self.factor: float = state["factor"]  # weak supervision
        self.next: dict | None = state["next"]  # dynamic: {"prefix", "reason"} decided after the last epoch
        self.entry: int | None = state["entry"]  # the epoch of the boundary-schedule entry in force
        self.moved: dict = state["moved"]  # what moved at this epoch's start, for its record
        self.active: list[str] | None = state["active"]  # adaptive, progressive, sliding: the cuts in force
        self.merged_at: dict[str, int] = state["merged_at"]  # adaptive: inactive candidate -> epoch merged
        self.next_cuts: dict | None = state["next_cuts"]  # {"cuts", "reason"} for the next epoch
        self.block_losses: dict[str, float] = state["block_losses"]  # adaptive: last epoch's, by output cut
        self.last_move: int = state.get("last_move", 0)  # progressive, sliding: epoch of the last move (0: none)
        # head_warmup: the cut of each aux head in force that appeared during the run -> the 1-based epoch
        # it appeared in (its warm-up began)
        self.heads_appeared: dict[str, int] = state.get("heads_appeared", {})
        base_options = {"blocks": None, "cuts": self.candidates} if moving else {}
        # only the program in force: a program holds a copy of the model's weights, so keeping every
        # one the run visited grew its memory with each move (docs/results.md)
        self._current = (_key({"prefix": program.options.get("prefix", 0), **base_options}), program)
        self._activation_peaks: dict[str, int] = {}

    def state(self) -> dict:
        return {"prefix": self.prefix, "factor": self.factor, "next": self.next, "entry": self.entry,
                "moved": self.moved, "active": self.active, "merged_at": self.merged_at,
                "next_cuts": self.next_cuts, "block_losses": self.block_losses, "last_move": self.last_move,
                "heads_appeared": self.heads_appeared}

    def _boundary_options(self) -> dict:
        if self.entry is not None:
            return self.boundaries.entry_for(self.entry).options()
        if self.active is not None:  # a moving policy; a cut the Hebbian prefix has passed is no boundary
            return {"blocks": None, "cuts": [c for c in self.active if self.segment_of_cut[c] > self.prefix]}
        return {}

    def program(self) -> Program:
        key = _key({"prefix": self.prefix, **self._boundary_options()})
        if key != self._current[0]:
            changes = {"prefix": self.prefix} if self.learning is not None else {}
            changes.update(self._boundary_options())
            self._current = (key, recompile(self.base, **changes))
        return self._current[1]

    def begin_epoch(self, epoch: int) -> bool:
        """Set the prefix and boundaries of 1-based ``epoch``; whether the program changed."""
        old_cuts = _block_cuts(self.program())
        moved = self._move_prefix(epoch)
        entry = self.boundaries.entry_for(epoch) if self.boundaries is not None else None
        if entry is not None and entry.epoch != self.entry:
            self.entry = entry.epoch
            self.moved["boundaries"] = {"reason": f"schedule: {entry.describe()} from epoch {entry.epoch}"}
            moved = True
        if self.next_cuts is not None:
            self.active = self.next_cuts["cuts"]
            self.moved["boundaries"] = {"reason": f"{self.boundaries.boundary_policy}: {self.next_cuts['reason']}"}
            self.next_cuts = None
            moved = True
        new_cuts = _block_cuts(self.program())
        if new_cuts == old_cuts:
            self.moved.pop("boundaries", None)
        else:
            self.moved.setdefault("boundaries", {"reason": "the Hebbian prefix moved"})
            self.moved["boundaries"].update({"from": old_cuts, "to": new_cuts})
        self._start_warmups(epoch, old_cuts, new_cuts)
        return moved

    def _start_warmups(self, epoch: int, old_cuts: list[str], new_cuts: list[str]) -> None:
        """A head at a cut that is a boundary from ``epoch`` on, and was none before, warms up from it."""
        if self.boundaries is None or not self.boundaries.head_warmup or epoch == 1:  # epoch 1: every block is new
            return
        appeared = {cut: epoch for cut in new_cuts if cut not in old_cuts}
        self.heads_appeared = {**{cut: first for cut, first in self.heads_appeared.items() if cut in new_cuts},
                               **appeared}
        if appeared:
            self.moved["boundaries"]["head_warmup"] = {"cuts": list(appeared), "epochs": self.boundaries.head_warmup}

    def warming_cuts(self, epoch: int, step: int, steps_per_epoch: int) -> set[str]:
        """The cuts whose aux head still trains alone at ``step`` of 0-based ``epoch`` (``head_warmup``)."""
        if not self.heads_appeared:
            return set()
        length = math.ceil(self.boundaries.head_warmup * steps_per_epoch)
        return {cut for cut, first in self.heads_appeared.items()
                if (epoch + 1 - first) * steps_per_epoch + step < length}

    def _warmed_in(self, epoch: int) -> set[str]:
        """The cuts whose head warmed up during some of 1-based ``epoch`` (a warm-up starts with an
        epoch, so at its first step): the block ending at each was held then, so its update norms do
        not say whether it has settled."""
        return self.warming_cuts(epoch - 1, 0, 1)

    def _move_prefix(self, epoch: int) -> bool:
        if self.learning is None:
            return False
        if self.learning.learning_mode == "static":
            wanted, reason = static_prefix(self.learning, epoch), f"{self.learning.schedule} schedule"
        elif self.next is not None:
            wanted, reason = self.next["prefix"], self.next["reason"]
        else:
            wanted, reason = self.prefix, ""
        wanted = max(wanted, self.prefix)  # the prefix only grows
        if wanted == self.prefix:
            return False
        self.moved["transition"] = {"from": self.prefix, "to": wanted, "reason": reason}
        self.prefix, self.next = wanted, None
        return True

    def hebbian_lr(self, lr: float, base_lr: float) -> float:
        """The localized rate at a step whose SGD rate is ``lr`` (peak ``base_lr``)."""
        return self.learning.hebbian_lr * (lr / base_lr if base_lr else 1.0) * self.factor

    def hebbian_updates_at(self, step: int) -> bool:
        """Whether the localized weights are updated at 0-based global ``step`` (``hebbian_every``)."""
        return step % self.learning.hebbian_every == 0

    def end_epoch(self, epoch: int, norm_history: list[dict[str, float]], train_losses: list[float],
                  stage_metrics: dict[str, dict], lr_means: list[float]) -> dict:
        """After 1-based ``epoch``, given every epoch's update norms, training loss and mean learning
        rate so far (this one last) and this epoch's loss and accuracy per stage: the dynamic
        decisions and the weak supervision for the next epoch; the fields this adds to the epoch's
        metrics record."""
        record: dict = {"cuts": self.program().cuts}
        if "boundaries" in self.moved:
            record["boundary_change"] = self.moved["boundaries"]
        if "transition" in self.moved:
            record["transition"] = self.moved["transition"]
        self.moved = {}
        if self.active is not None:
            per_lr = per_unit_lr(norm_history, lr_means)
            record["boundary_signals"] = (self._adapt_boundaries(epoch, per_lr, stage_metrics)
                                          if self.boundaries.boundary_policy == "adaptive"
                                          else self._move_boundaries(epoch, per_lr))
        if self.learning is None:
            return record
        record.update({"prefix": self.prefix, "transition_layer": self.transition_layers[self.prefix],
                       "hebbian_lr_factor": self.factor, "hebbian_lr": self.learning.hebbian_lr * self.factor})
        if self.learning.learning_mode == "dynamic":
            decided, reason = dynamic_prefix(self.learning, epoch + 1, self.prefix, norm_history, lr_means,
                                             self.transition_layers)
            self.next = {"prefix": decided, "reason": reason} if decided != self.prefix else None
            record["dynamic_decision"] = reason
        self.factor = weak_supervision_factor(self.learning, self.factor, train_losses)
        return record

    def _adapt_boundaries(self, epoch: int, per_lr: list[dict[str, float]], stage_metrics: dict[str, dict]) -> dict:
        """The adaptive policy's decision after ``epoch`` (applied when the next one begins); its signals.

        ``per_lr``: every epoch's update norms per unit of its mean learning rate (``per_unit_lr``)."""
        trained = [s for s in self.program().stages if s.kind != "hebbian"]
        blocks = [BlockSignal(s.output if s.kind != "final" else None, stage_metrics[s.name]["loss"],
                              stage_metrics[s.name]["acc"], self.block_losses.get(s.output))
                  for s in trained]
        threshold = self.boundaries.setting("settle_threshold")
        held = self._warmed_in(epoch)
        settled = {cut: self._block_end(cut) not in held
                   and layers_settled(self._layers_before(cut), per_lr, threshold)
                   for cut in self.candidates if cut not in self.active}
        merged_activations = {cut: self._activation_share([c for c in self.active if c != cut])
                              for cut in self.active}
        decision = decide(self.boundaries, self.candidates, self.active, blocks, self.merged_at, epoch, settled,
                          merged_activations)
        self.block_losses = {s.output: b.loss for s, b in zip(trained, blocks)}
        if decision.active != self.active:
            self.merged_at = {c: self.merged_at.get(c, epoch) for c in self.candidates if c not in decision.active}
            self.next_cuts = {"cuts": decision.active, "reason": decision.reason}
        return {**decision.signals, "decision": decision.reason or "no change"}

    def _move_boundaries(self, epoch: int, per_lr: list[dict[str, float]]) -> dict:
        """The progressive or sliding policy's move after ``epoch`` (applied when the next one begins)
        over the cut points after the Hebbian prefix; its signals."""
        policy = self.boundaries
        trained = [c for c in self.active if self.segment_of_cut[c] > self.prefix]
        threshold, min_blocks = policy.setting("settle_threshold"), policy.setting("min_blocks")
        held = self._warmed_in(epoch)
        settled = {cut: cut not in held and layers_settled(self._layers_before(cut), per_lr, threshold)
                   for cut in trained}
        if policy.boundary_policy == "progressive":
            moves = progressive_moves(trained, settled, min_blocks)
        else:
            cut_points = [c for c in self.cut_points if self.segment_of_cut[c] > self.prefix]
            moves = sliding_moves(trained, cut_points, settled, min_blocks)
        shares = [self._activation_share(move.cuts) for move in moves]
        decision = choose(policy, trained, moves, shares, self.last_move, epoch, settled)
        if decision.active != trained:
            self.last_move = epoch
            self.next_cuts = {"cuts": decision.active, "reason": decision.reason}
        return {**decision.signals, "decision": decision.reason or "no change"}

    def _activation_share(self, cuts: list[str]) -> float:
        """The cost model's peak of activations kept for backward with these block ``cuts`` (and the
        current prefix), as a fraction of the end-to-end program's."""
        def peak(**changes) -> int:
            key = _key(changes)
            if key not in self._activation_peaks:
                program = recompile(self.base, **changes)
                self._activation_peaks[key] = cost_program(program, ACTIVATION_BATCH).activation_peak_bytes
            return self._activation_peaks[key]

        prefix = {"prefix": self.prefix} if self.learning is not None else {}
        trained = [c for c in cuts if self.segment_of_cut[c] > self.prefix]
        return peak(**prefix, blocks=None, cuts=trained) / max(peak(prefix=0, blocks=None, cuts=[]), 1)

    def _block_end(self, cut: str) -> str | None:
        """The active cut that ends the block holding inactive ``cut`` (None: the final block)."""
        later = [c for c in self.active if self.segment_of_cut[c] > self.segment_of_cut[cut]]
        return min(later, key=self.segment_of_cut.get, default=None)

    def _layers_before(self, cut: str) -> list[str]:
        """The layers from the start of the block that holds ``cut`` (inactive), or ends at it (active),
        up to ``cut``."""
        end = self.segment_of_cut[cut]
        starts = [self.segment_of_cut[c] for c in self.active if self.segment_of_cut[c] < end]
        start = max([*starts, self.prefix])  # a cut the prefix has passed starts no block
        return [layer for layers in self.segment_layers[start:end] for layer in layers]
