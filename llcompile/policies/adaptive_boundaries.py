"""The ``adaptive`` boundary policy: which block boundaries the next epoch trains with.

DBL moves its block boundaries during training by a rule its paper does not publish; this is
llcompile's (docs/strategies.md), from per-block signals of the epoch just
trained. The boundaries given at transform time are the *candidates*; all start active.

- **merge** (accuracy gain): block i+1 exists to improve on block i's features. When the
  training accuracy of its head exceeds the head of block i by less than ``merge_gain``, the
  boundary between them is not paying for itself: the greedy features at that boundary are what
  limits the blocks after it, so the boundary is removed and the later block's error reaches the
  earlier layers again. One merge per epoch (the boundary with the smallest gain), never below
  ``min_blocks`` blocks, and only where the merged program's peak of activations kept for
  backward (the cost model's, ``llcompile.report``) stays within ``activation_budget`` times the
  end-to-end program's: the memory saving is the point of block-wise training, so the policy
  spends the budget on the boundaries that hurt accuracy most.
- **restore** (update norms): a merged candidate comes back once the layers before it (in its
  current block) have settled: each one's relative update norm ``||dW|| / ||W||`` over the epoch,
  per unit of the epoch's mean learning rate (the runtime scales them), is below
  ``settle_threshold`` times its own peak, so it depends neither on the learning-rate scale nor on
  its schedule. Then local learning there costs little accuracy and saves
  the memory and the dX work again. At least ``boundary_patience`` epochs after its merge, one per
  epoch, and only in an epoch without a merge.

Every decision comes with its signals (each boundary's accuracies and gain, the block losses and
their trend), which the runtime logs in metrics.jsonl.
"""

from __future__ import annotations

from llcompile.policies.boundary_decision import BlockSignal, BoundaryRule, BoundaryState, Decision


class AdaptiveBoundaries(BoundaryRule):
    """Merges and restores the transform-time boundaries from per-block signals."""

    from_signals = True

    def decide(self, state: BoundaryState) -> Decision | None:
        """The active cuts after the trained ``state.epoch`` (the candidates, ``state.active``,
        ``blocks``, ``merged_at`` and ``settled`` read; the activation share of each active cut's
        merge)."""
        if not state.ended:
            return None
        policy, active, blocks = self.options, state.active, state.blocks
        signals = {"boundaries": [_boundary_signal(before, after) for before, after in zip(blocks, blocks[1:])],
                   "loss_trend": {b.output or "final": _trend(b) for b in blocks}}
        merged_activations = {cut: state.activation_share([c for c in active if c != cut]) for cut in active}
        budget = policy.setting("activation_budget")
        for signal in signals["boundaries"]:
            if signal["cut"] in merged_activations:
                signal["activations_if_merged"] = round(merged_activations[signal["cut"]], 4)
        gains = [(s["gain"], s["cut"]) for s in signals["boundaries"]
                 if s["cut"] in active and merged_activations.get(s["cut"], 0.0) <= budget]
        merge_gain = policy.setting("merge_gain")
        if gains and len(active) + 1 > policy.setting("min_blocks"):
            gain, cut = min(gains)
            if gain < merge_gain:
                return self._change(state, [c for c in active if c != cut],
                                    f"merged at {cut}: the next block's head gains {gain:+.4f} accuracy "
                                    f"(< merge gain {merge_gain:g})", signals)
        patience = policy.setting("boundary_patience")
        for cut in state.candidates:
            if (cut not in active and state.epoch - state.merged_at.get(cut, 0) >= patience
                    and state.settled.get(cut, False)):
                return self._change(state, [c for c in state.candidates if c in active or c == cut],
                                    f"restored {cut}: the layers before it settled (update norms per unit learning "
                                    f"rate below {policy.setting('settle_threshold'):g} of their peaks)", signals)
        return Decision(None, "", signals, memory={"block_losses": state.block_losses})

    @staticmethod
    def _change(state: BoundaryState, active: list[str], reason: str, signals: dict) -> Decision:
        """A move to ``active``; a candidate left out is merged since ``state.epoch`` unless it was before."""
        merged_at = {c: state.merged_at.get(c, state.epoch) for c in state.candidates if c not in active}
        return Decision(active, reason, signals, memory={"block_losses": state.block_losses, "merged_at": merged_at})


def _boundary_signal(before: BlockSignal, after: BlockSignal) -> dict:
    return {"cut": before.output, "acc_before": round(before.acc, 4), "acc_after": round(after.acc, 4),
            "gain": round(after.acc - before.acc, 4)}


def _trend(block: BlockSignal) -> float | None:
    """Relative change of the block's loss over the epoch before (negative: still falling)."""
    if block.previous_loss is None or block.previous_loss <= 0:
        return None
    return round(block.loss / block.previous_loss - 1.0, 4)
