"""The Hebbian prefix between epochs (LoCal+SGD's learning mode): its state and its moves."""

from __future__ import annotations

from dataclasses import dataclass

from llcompile.policies.learning_mode import LearningMode
from llcompile.policies.transition_rules import PrefixState, transition_rule


@dataclass
class PrefixControlState:
    """The prefix controller's part of a checkpoint's controller state."""

    prefix: int
    factor: float = 1.0  # weak supervision
    next: dict | None = None  # dynamic: {"prefix", "reason"} decided after the last epoch


class PrefixController:
    """Moves the Hebbian prefix by the learning mode (``learning``; None: the prefix never moves)."""

    def __init__(self, learning: LearningMode | None, state: PrefixControlState):
        self.learning = learning
        self.rule = transition_rule(learning) if learning is not None else None
        self.state = state

    def begin_epoch(self, epoch: int) -> dict | None:
        """Set the prefix of 1-based ``epoch``; the move ({"from", "to", "reason"}), None if none."""
        if self.rule is None:
            return None
        state = self.state
        decision = self.rule.decide(PrefixState(epoch, state.prefix, state.factor))
        if decision.prefix is not None:
            wanted, reason = decision.prefix, decision.reason
        elif state.next is not None:
            wanted, reason = state.next["prefix"], state.next["reason"]
        else:
            wanted, reason = state.prefix, ""
        wanted = max(wanted, state.prefix)  # the prefix only grows
        if wanted == state.prefix:
            return None
        move = {"from": state.prefix, "to": wanted, "reason": reason}
        state.prefix, state.next = wanted, None
        return move

    def end_epoch(self, epoch: int, norm_history: list[dict[str, float]], train_losses: list[float],
                  lr_means: list[float], transition_layers: list[str]) -> dict:
        """After 1-based ``epoch``: the next epoch's dynamic decision and weak supervision; the fields
        this adds to the epoch's metrics record."""
        if self.rule is None:
            return {}
        state = self.state
        record = {"prefix": state.prefix, "transition_layer": transition_layers[state.prefix],
                  "hebbian_lr_factor": state.factor, "hebbian_lr": self.learning.hebbian_lr * state.factor}
        decision = self.rule.decide(PrefixState(epoch, state.prefix, state.factor, True, norm_history, lr_means,
                                                train_losses, transition_layers))
        if decision.prefix is not None:
            state.next = {"prefix": decision.prefix, "reason": decision.reason} if decision.prefix != state.prefix \
                else None
            record["dynamic_decision"] = decision.reason
        state.factor = decision.factor
        return record

    def hebbian_lr(self, lr: float, base_lr: float) -> float:
        """The localized rate at a step whose SGD rate is ``lr`` (peak ``base_lr``)."""
        return self.learning.hebbian_lr * (lr / base_lr if base_lr else 1.0) * self.state.factor

    def hebbian_updates_at(self, step: int) -> bool:
        """Whether the localized weights are updated at 0-based global ``step`` (``hebbian_every``)."""
        return step % self.learning.hebbian_every == 0
