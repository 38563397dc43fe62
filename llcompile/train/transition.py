"""The runtime side of LoCal+SGD: moves the Localized->SGD transition between epochs.

``PrefixController`` decides each epoch's Hebbian prefix (``llcompile.learning_mode``), keeps the
weak-supervision factor and the transition layer's update-norm history, and hands the loop the
program for a prefix (re-emitted with ``recompile``, cached per prefix). Its state is plain JSON,
kept in checkpoints, so a resumed run decides exactly as the uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.analysis import analyze
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


class PrefixController:
    def __init__(self, program: Program, mode: LearningMode, state: dict | None = None):
        self.base = program
        self.mode = mode
        analysis = analyze(ir.from_proto(program.eval_model))
        # the transition layer of prefix p: the first layer of segment p
        self.transition_layers = [segment.layers[0] for segment in analysis.segments]
        state = state or {"prefix": program.options.get("prefix", 0), "factor": 1.0, "next": None, "moved": None}
        self.prefix: int = state["prefix"]
        self.factor: float = state["factor"]
        # dynamic: {"prefix", "reason"} decided at the end of the last epoch, or None
        self.next: dict | None = state["next"]
        self.moved: dict | None = state["moved"]  # the move made at this epoch's start, for its record
        self._programs = {program.options.get("prefix", 0): program}

    def state(self) -> dict:
        return {"prefix": self.prefix, "factor": self.factor, "next": self.next, "moved": self.moved}

    def program(self, prefix: int | None = None) -> Program:
        prefix = self.prefix if prefix is None else prefix
        if prefix not in self._programs:
            self._programs[prefix] = recompile(self.base, prefix=prefix)
        return self._programs[prefix]

    def begin_epoch(self, epoch: int) -> bool:
        """Set the prefix of 1-based ``epoch``; whether it moved."""
        if self.mode.learning_mode == "static":
            wanted, reason = static_prefix(self.mode, epoch), f"{self.mode.schedule} schedule"
        elif self.next is not None:
            wanted, reason = self.next["prefix"], self.next["reason"]
        else:
            wanted, reason = self.prefix, ""
        wanted = max(wanted, self.prefix)  # the prefix only grows
        if wanted == self.prefix:
            return False
        self.moved = {"from": self.prefix, "to": wanted, "reason": reason}
        self.prefix, self.next = wanted, None
        return True

    def hebbian_lr(self, lr: float, base_lr: float) -> float:
        """The localized rate at a step whose SGD rate is ``lr`` (peak ``base_lr``)."""
        return self.mode.hebbian_lr * (lr / base_lr if base_lr else 1.0) * self.factor

    def end_epoch(self, epoch: int, norm_history: list[dict[str, float]], train_losses: list[float]) -> dict:
        """After 1-based ``epoch``, given every epoch's update norms and training loss so far (this
        one last): update the dynamic decision and the weak supervision; the fields this adds to
        the epoch's metrics record."""
        transition = self.transition_layers[self.prefix]
        record = {"prefix": self.prefix, "transition_layer": transition, "hebbian_lr_factor": self.factor,
                  "hebbian_lr": self.mode.hebbian_lr * self.factor}
        if self.moved is not None:
            record["transition"], self.moved = self.moved, None
        if self.mode.learning_mode == "dynamic":
            decided, reason = dynamic_prefix(self.mode, epoch + 1, self.prefix, norm_history, self.transition_layers)
            self.next = {"prefix": decided, "reason": reason} if decided != self.prefix else None
            record["dynamic_decision"] = reason
        self.factor = weak_supervision_factor(self.mode, self.factor, train_losses)
        return record
