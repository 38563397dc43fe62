"""LoCal+SGD's learning modes as objects with one decision: ``decide(state)`` for both modes.

The runtime (``train.prefix_control``) asks when an epoch begins (``state.ended`` False: the
``static`` schedule sets the prefix then) and when it has been trained (``state.ended`` True: the
``dynamic`` rule decides the next epoch's prefix from the update norms; both apply weak
supervision). The rules themselves are ``llcompile.policies.learning_mode``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llcompile.policies.learning_mode import LearningMode, dynamic_prefix, static_prefix, weak_supervision_factor


@dataclass(frozen=True)
class PrefixState:
    """What the runtime knows at 1-based ``epoch``: the ``prefix`` in force, the localized-rate
    ``factor``, and after the epoch (``ended``) every epoch's update norms, mean learning rate and
    training loss so far (this one last), and the transition layer of each prefix."""

    epoch: int
    prefix: int
    factor: float
    ended: bool = False
    norm_history: list[dict[str, float]] = field(default_factory=list)
    lr_means: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    transition_layers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PrefixDecision:
    """The prefix wanted (None: not decided now) and why; the localized-rate factor from now on."""

    prefix: int | None
    reason: str
    factor: float


class TransitionRule:
    """A learning mode: ``decide`` is its one decision."""

    def __init__(self, mode: LearningMode):
        self.mode = mode

    def decide(self, state: PrefixState) -> PrefixDecision:
        raise NotImplementedError

    def _after_epoch_factor(self, state: PrefixState) -> float:
        return weak_supervision_factor(self.mode, state.factor, state.train_losses)


class StaticTransition(TransitionRule):
    """The prefix is a scheduler function of the epoch."""

    def decide(self, state: PrefixState) -> PrefixDecision:
        if state.ended:
            return PrefixDecision(None, "", self._after_epoch_factor(state))
        return PrefixDecision(static_prefix(self.mode, state.epoch), f"{self.mode.schedule} schedule", state.factor)


class DynamicTransition(TransitionRule):
    """The transition moves past the layers that have settled, after every epoch."""

    def decide(self, state: PrefixState) -> PrefixDecision:
        if not state.ended:
            return PrefixDecision(None, "", state.factor)
        prefix, reason = dynamic_prefix(self.mode, state.epoch + 1, state.prefix, state.norm_history, state.lr_means,
                                        state.transition_layers)
        return PrefixDecision(prefix, reason, self._after_epoch_factor(state))


TRANSITION_RULES: dict[str, type[TransitionRule]] = {"static": StaticTransition, "dynamic": DynamicTransition}


def transition_rule(mode: LearningMode) -> TransitionRule:
    """The learning mode that ``mode`` names, with its settings."""
    return TRANSITION_RULES[mode.learning_mode](mode)
