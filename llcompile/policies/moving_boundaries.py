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
taken. The runtime (``train.boundary_control``) computes the signals and applies the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

from llcompile.policies.boundary_decision import BoundaryRule, BoundaryState, Decision


@dataclass(frozen=True)
class Move:
    """A candidate change: the boundaries after it (cut tensors, model order) and why."""

    cuts: list[str]
    reason: str


class MovingBoundaries(BoundaryRule):
    """A policy that moves one boundary at a time over the cut points after the Hebbian prefix: the
    first of its ``moves`` within the activation budget, ``boundary_patience`` epochs apart."""

    from_signals = True

    def moves(self, trained: list[str], state: BoundaryState) -> list[Move]:
        """The candidate moves of the ``trained`` boundaries, preferred first."""
        raise NotImplementedError

    def decide(self, state: BoundaryState) -> Decision | None:
        """The boundaries after the trained ``state.epoch``: the first move whose activation peak is
        within the budget, once ``boundary_patience`` epochs have passed since ``state.last_move``;
        else none."""
        if not state.ended:
            return None
        trained = [c for c in state.active if c in state.cut_points]
        moves = self.moves(trained, state)
        shares = [state.activation_share(move.cuts) for move in moves]
        budget = self.options.setting("activation_budget")
        signals = {"settled": {cut: state.settled.get(cut, False) for cut in trained},
                   "moves": [{"to": move.cuts, "activations": round(share, 4)} for move, share in zip(moves, shares)]}
        if state.epoch - state.last_move >= self.options.setting("boundary_patience"):
            for move, share in zip(moves, shares):
                if share <= budget:
                    return Decision(move.cuts, f"{move.reason} (activations {share:.2f} x bp's, budget {budget:g})",
                                    signals, memory={"last_move": state.epoch})
        return Decision(None, "", signals)


class ProgressiveBoundaries(MovingBoundaries):
    """Merges the earliest boundary whose block has settled."""

    def moves(self, trained: list[str], state: BoundaryState) -> list[Move]:
        """Merges of the boundaries whose block before them has settled, earliest first; none when
        the program already has ``min_blocks`` blocks."""
        if len(trained) + 1 <= self.options.setting("min_blocks"):
            return []
        return [Move([c for c in trained if c != cut], f"merged at {cut}: the block before it settled")
                for cut in trained if state.settled.get(cut, False)]


class SlidingBoundaries(MovingBoundaries):
    """Moves the earliest boundary whose block has settled one cut point toward the output."""

    def moves(self, trained: list[str], state: BoundaryState) -> list[Move]:
        """Each settled boundary moved to the next cut point, earliest first; onto the next boundary
        it merges with it (not below ``min_blocks`` blocks)."""
        moves, cut_points = [], state.cut_points
        for cut in trained:
            position = cut_points.index(cut)
            if not state.settled.get(cut, False) or position + 1 == len(cut_points):
                continue
            target = cut_points[position + 1]
            if target not in trained:
                moves.append(Move([target if c == cut else c for c in trained],
                                  f"slid {cut} -> {target}: the block before it settled"))
            elif len(trained) + 1 > self.options.setting("min_blocks"):
                moves.append(Move([c for c in trained if c != cut],
                                  f"slid {cut} onto the next boundary {target}: the block before it settled"))
        return moves
