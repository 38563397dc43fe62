"""The ``progressive`` and ``sliding`` boundary policies: boundaries that move over all cut points.

``adaptive`` (``llcompile.policies.adaptive_boundaries``) only switches the boundaries chosen at transform
time on and off. These two reach any cut point after the Hebbian prefix; both are llcompile's
rules (DBL's paper does not publish its own; docs/strategies.md), decided after every epoch from
whether each block's layers have *settled*: every one of them moved, over the epoch and per unit
of the epoch's mean learning rate, by less than ``settle_threshold`` times its own peak
(``settling.layers_settled``, the test ``adaptive`` restores by).

- ``progressive``: start with many small blocks (``--blocks K`` up to the number of segments: a
  block of one or two layers learns layer-wise features cheaply, with little kept alive) and
  merge the earliest boundary whose block has settled, so blocks grow from the input side as
  training goes on and the settled layers get the error of the block after them.
- ``sliding``: the earliest boundary whose block has settled moves one cut point toward the
  output: the settled block takes in the next segment, which its head now trains, and the block
  after it shrinks. A boundary that reaches the next one merges with it (never below
  ``min_blocks``); the last cut point is as far as one goes.

For both: at most one move per epoch, at least ``boundary_patience`` epochs apart, and only a move
whose program keeps its peak of activations kept for backward (the cost model's, x end-to-end
backprop's) within ``activation_budget``; when the preferred move is over budget the next one is
taken. Pure functions: the runtime (``train.transition``) computes the signals and applies the
decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from llcompile.policies.adaptive_boundaries import Decision
from llcompile.policies.boundary_policy import BoundaryPolicy


@dataclass(frozen=True)
class Move:
    """A candidate change: the boundaries after it (cut tensors, model order) and why."""

    cuts: list[str]
    reason: str


def progressive_moves(active: list[str], settled: dict[str, bool], min_blocks: int) -> list[Move]:
    """Merges of the ``active`` boundaries whose block before them has ``settled``, earliest first;
    none when the program already has ``min_blocks`` blocks."""
    if len(active) + 1 <= min_blocks:
        return []
    return [Move([c for c in active if c != cut], f"merged at {cut}: the block before it settled")
            for cut in active if settled.get(cut, False)]


def sliding_moves(active: list[str], cut_points: list[str], settled: dict[str, bool], min_blocks: int) -> list[Move]:
    """Each settled ``active`` boundary moved to the next of ``cut_points`` (model order), earliest
    first; onto the next boundary it merges with it (not below ``min_blocks`` blocks)."""
    moves = []
    for cut in active:
        position = cut_points.index(cut)
        if not settled.get(cut, False) or position + 1 == len(cut_points):
            continue
        target = cut_points[position + 1]
        if target not in active:
            moves.append(Move([target if c == cut else c for c in active],
                              f"slid {cut} -> {target}: the block before it settled"))
        elif len(active) + 1 > min_blocks:
            moves.append(Move([c for c in active if c != cut],
                              f"slid {cut} onto the next boundary {target}: the block before it settled"))
    return moves


def choose(policy: BoundaryPolicy, active: list[str], moves: list[Move], shares: list[float], last_move: int,
           epoch: int, settled: dict[str, bool]) -> Decision:
    """The boundaries after 1-based ``epoch``: the first of ``moves`` whose activation peak
    (``shares``, x end to end's, one per move) is within the budget, once ``boundary_patience``
    epochs have passed since the ``last_move`` (0: none yet); else ``active`` unchanged."""
    budget = policy.setting("activation_budget")
    signals = {"settled": {cut: settled.get(cut, False) for cut in active},
               "moves": [{"to": move.cuts, "activations": round(share, 4)} for move, share in zip(moves, shares)]}
    if epoch - last_move < policy.setting("boundary_patience"):
        return Decision(list(active), "", signals)
    for move, share in zip(moves, shares):
        if share <= budget:
            return Decision(move.cuts, f"{move.reason} (activations {share:.2f} x bp's, budget {budget:g})",
                            signals)
    return Decision(list(active), "", signals)
