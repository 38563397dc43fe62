"""What a boundary policy decides from, and what it decides: one ``decide(state)`` for every policy.

The runtime (``train.boundary_control``) asks its policy twice per epoch: when the epoch begins
(``state.ended`` False: only the epoch is known; a schedule changes the boundaries then) and when
it has been trained (``state.ended`` True: the per-block signals of the epoch; the policies that
read them, ``from_signals``, decide the next epoch's boundaries then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from llcompile.policies.boundary_policy import BoundaryPolicy, ScheduleEntry


@dataclass(frozen=True)
class BlockSignal:
    """What one trained block did in the epoch: its output cut (None for the last block), the
    training loss and accuracy of its head, and its loss the epoch before (None if unknown)."""

    output: str | None
    loss: float
    acc: float
    previous_loss: float | None = None


def _no_activations(_cuts: list[str]) -> float:
    return 0.0


@dataclass(frozen=True)
class BoundaryState:
    """The signals of 1-based ``epoch``, as the runtime has them.

    ``active``: the cuts in force; ``candidates``: the boundaries given at transform time;
    ``cut_points``: where a boundary may go (after the Hebbian prefix); ``blocks``: each trained
    block's signals in order; ``settled``: per cut, whether the layers of the block that ends at it
    (active) or holds it (inactive) have settled; ``merged_at``: the epoch each inactive candidate
    was merged; ``last_move``: the epoch of the last move (0: none); ``block_losses``: this epoch's
    loss of each trained block by its stage's output; ``activation_share``: the cost model's peak of
    activations kept for backward with the given cuts, x end-to-end backprop's."""

    epoch: int
    ended: bool = True
    active: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    cut_points: list[str] = field(default_factory=list)
    blocks: list[BlockSignal] = field(default_factory=list)
    settled: dict[str, bool] = field(default_factory=dict)
    merged_at: dict[str, int] = field(default_factory=dict)
    last_move: int = 0
    block_losses: dict[str, float] = field(default_factory=dict)
    activation_share: Callable[[list[str]], float] = _no_activations


@dataclass(frozen=True)
class Decision:
    """A policy's decision: the cuts in force from the next epoch (``active``, model order; None:
    no change) or the schedule ``entry`` in force from this one; why; the signals it decided from
    (logged); and what the policy keeps for its next decisions (``memory``: ``BoundaryState``
    fields the runtime stores, in its checkpoints too)."""

    active: list[str] | None = None
    reason: str = ""
    signals: dict | None = None
    entry: ScheduleEntry | None = None
    memory: dict = field(default_factory=dict)


class BoundaryRule:
    """A boundary policy: ``decide`` is its one decision (None: nothing to change or log)."""

    from_signals = False  # whether it reads the per-block signals of a trained epoch

    def __init__(self, options: BoundaryPolicy):
        self.options = options

    def decide(self, state: BoundaryState) -> Decision | None:
        raise NotImplementedError
