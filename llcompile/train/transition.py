"""What changes between epochs: the Hebbian prefix (LoCal+SGD) and the block boundaries (DBL).

``ProgramController`` decides each epoch's Hebbian prefix (``llcompile.learning_mode``) and block
boundaries (``llcompile.boundary_policy``), keeps the weak-supervision factor, and hands the loop
the program for them (re-emitted with ``recompile``, cached). Its state is plain JSON, kept in
checkpoints, so a resumed run decides exactly as the uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.analysis import analyze
from llcompile.boundary_policy import BoundaryPolicy
from llcompile.compiler import recompile
from llcompile.learning_mode import LearningMode, dynamic_prefix, static_prefix, weak_supervision_factor
from llcompile.program import Program


def update_norms(before: dict[str, np.ndarray], after: dict[str, np.ndarray], weights: dict[str, str]) -> dict:
    """``||W_after - W_before|| / ||W_before||`` per layer; ``weights`` maps layer -> weight name."""
    norms = {}
    for layer, weight in weights.items():
        if weight in before and weight in after:
            old = before[weight].astype(np.float64)
            norms[layer] = float(np.linalg.norm(after[weight] - old) / max(np.linalg.norm(old), 1e-30))
    return norms


class ProgramController:
    """Between epochs: the Hebbian prefix (LoCal+SGD's learning mode, ``learning``) and the block
    boundaries (DBL's boundary policy, ``boundaries``) the next epoch trains with; the program for
    them, re-emitted when either moves and cached. Its state is plain JSON, kept in checkpoints."""

    def __init__(self, program: Program, learning: LearningMode | None, boundaries: BoundaryPolicy | None,
                 state: dict | None = None):
        self.base = program
        self.learning = learning
        self.boundaries = boundaries
        analysis = analyze(ir.from_proto(program.eval_model))
        # the transition layer of prefix p: the first layer of segment p
        self.transition_layers = [segment.layers[0] for segment in analysis.segments]
        state = state or {"prefix": program.options.get("prefix", 0), "factor": 1.0, "next": None,
                          "entry": None, "moved": {}}
        self.prefix: int = state["prefix"]
        self.factor: float = state["factor"]  # weak supervision
        self.next: dict | None = state["next"]  # dynamic: {"prefix", "reason"} decided after the last epoch
        self.entry: int | None = state["entry"]  # the epoch of the boundary-schedule entry in force
        self.moved: dict = state["moved"]  # what moved at this epoch's start, for its record
        self._programs = {(program.options.get("prefix", 0), None): program}

    def state(self) -> dict:
        return {"prefix": self.prefix, "factor": self.factor, "next": self.next, "entry": self.entry,
                "moved": self.moved}

    def program(self) -> Program:
        key = (self.prefix, self.entry)
        if key not in self._programs:
            changes = {"prefix": self.prefix} if self.learning is not None else {}
            if self.entry is not None:
                changes.update(self.boundaries.entry_for(self.entry).options())
            self._programs[key] = recompile(self.base, **changes)
        return self._programs[key]

    def begin_epoch(self, epoch: int) -> bool:
        """Set the prefix and boundaries of 1-based ``epoch``; whether the program changed."""
        old_cuts = self.program().cuts
        moved = self._move_prefix(epoch)
        entry = self.boundaries.entry_for(epoch) if self.boundaries is not None else None
        if entry is not None and entry.epoch != self.entry:
            self.entry = entry.epoch
            self.moved["boundaries"] = {"reason": f"schedule: {entry.describe()} from epoch {entry.epoch}"}
            moved = True
        new_cuts = self.program().cuts
        if new_cuts == old_cuts:
            self.moved.pop("boundaries", None)
        else:
            self.moved.setdefault("boundaries", {"reason": "the Hebbian prefix moved"})
            self.moved["boundaries"].update({"from": old_cuts, "to": new_cuts})
        return moved

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

    def end_epoch(self, epoch: int, norm_history: list[dict[str, float]], train_losses: list[float]) -> dict:
        """After 1-based ``epoch``, given every epoch's update norms and training loss so far (this
        one last): the dynamic decision and the weak supervision for the next epoch; the fields
        this adds to the epoch's metrics record."""
        record: dict = {"cuts": self.program().cuts}
        if "boundaries" in self.moved:
            record["boundary_change"] = self.moved["boundaries"]
        if "transition" in self.moved:
            record["transition"] = self.moved["transition"]
        self.moved = {}
        if self.learning is None:
            return record
        record.update({"prefix": self.prefix, "transition_layer": self.transition_layers[self.prefix],
                       "hebbian_lr_factor": self.factor, "hebbian_lr": self.learning.hebbian_lr * self.factor})
        if self.learning.learning_mode == "dynamic":
            decided, reason = dynamic_prefix(self.learning, epoch + 1, self.prefix, norm_history,
                                             self.transition_layers)
            self.next = {"prefix": decided, "reason": reason} if decided != self.prefix else None
            record["dynamic_decision"] = reason
        self.factor = weak_supervision_factor(self.learning, self.factor, train_losses)
        return record
