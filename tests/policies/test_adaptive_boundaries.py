"""The adaptive boundary policy's decisions, from hand-made per-block signals."""

import dataclasses

import pytest

from llcompile.policies.adaptive_boundaries import AdaptiveBoundaries
from llcompile.policies.boundary_decision import BlockSignal, BoundaryState
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.errors import LLCompileError
from llcompile.policies.settling import layers_settled

CANDIDATES = ["a", "b", "c"]


def _blocks(*accs, outputs=("a", "b", "c")):
    return [BlockSignal(output, loss=1.0, acc=acc) for output, acc in zip([*outputs[:len(accs) - 1], None], accs)]


def decide(policy, candidates, active, blocks, merged_at, epoch, settled, merged_activations):
    """The adaptive policy's decision; ``merged_activations``: the activation share of each active
    cut's merge (0 for those not given); the cuts in force when it changes nothing."""
    def share(cuts):
        merged = [cut for cut in active if cut not in cuts]
        return merged_activations.get(merged[0], 0.0) if len(merged) == 1 else 0.0

    decision = AdaptiveBoundaries(policy).decide(BoundaryState(
        epoch, active=active, candidates=candidates, blocks=blocks, settled=settled, merged_at=merged_at,
        activation_share=share))
    return decision if decision.active is not None else dataclasses.replace(decision, active=active)


def test_merges_the_boundary_with_the_smallest_gain_below_the_threshold():
    policy = BoundaryPolicy("adaptive", merge_gain=0.02)
    decision = decide(policy, CANDIDATES, CANDIDATES, _blocks(0.50, 0.60, 0.61, 0.60), {}, 1, {}, {})
    assert decision.active == ["a", "b"]  # at b the next block gains +0.01, at c -0.01: c goes
    decision = decide(policy, CANDIDATES, CANDIDATES, _blocks(0.50, 0.60, 0.65, 0.66), {}, 1, {}, {})
    assert decision.active == ["a", "b"] and "merged at c" in decision.reason and "+0.010" in decision.reason
    assert [s["gain"] for s in decision.signals["boundaries"]] == [0.1, 0.05, 0.01]


def test_the_reason_prints_a_gain_just_below_the_threshold_as_below_it():
    """0.0097 < 0.01 merges; the reason must not print it as +0.010 beside "< merge gain 0.01"."""
    policy = BoundaryPolicy("adaptive", merge_gain=0.01)
    decision = decide(policy, CANDIDATES, CANDIDATES, _blocks(0.50, 0.60, 0.70, 0.7097), {}, 1, {}, {})
    assert decision.active == ["a", "b"]
    assert "gains +0.0097 accuracy (< merge gain 0.01)" in decision.reason


def test_no_merge_when_every_gain_pays_or_at_the_minimum_block_count():
    policy = BoundaryPolicy("adaptive", merge_gain=0.02)
    assert decide(policy, CANDIDATES, CANDIDATES, _blocks(0.5, 0.6, 0.7, 0.8), {}, 1, {}, {}).active == CANDIDATES
    two = decide(BoundaryPolicy("adaptive", merge_gain=0.5), CANDIDATES, ["a"], _blocks(0.5, 0.5, outputs=("a",)),
                 {"b": 1, "c": 1}, 2, {}, {})
    assert two.active == ["a"] and two.reason == ""  # 2 blocks = min_blocks, nothing settled


def test_merges_only_within_the_activation_budget():
    policy = BoundaryPolicy("adaptive", merge_gain=0.02, activation_budget=0.7)
    blocks = _blocks(0.50, 0.50, 0.51, 0.60)  # at a +0.00, at b +0.01: a is the worst
    decision = decide(policy, CANDIDATES, CANDIDATES, blocks, {}, 1, {}, {"a": 0.8, "b": 0.6, "c": 0.4})
    assert decision.active == ["a", "c"]  # merging a would keep 0.8 of bp's activations
    assert [s["activations_if_merged"] for s in decision.signals["boundaries"]] == [0.8, 0.6, 0.4]
    assert decision.memory["merged_at"] == {"b": 1}
    assert decide(policy, CANDIDATES, CANDIDATES, blocks, {}, 1, {}, {"a": 0.8, "b": 0.9, "c": 0.4}).active == \
        CANDIDATES  # c gains +0.09: worth keeping; the others are over budget


def test_restores_a_settled_candidate_after_its_patience_but_not_in_a_merge_epoch():
    policy = BoundaryPolicy("adaptive", merge_gain=0.02, boundary_patience=2)
    good = _blocks(0.5, 0.7, outputs=("a",))
    assert decide(policy, CANDIDATES, ["a"], good, {"b": 2, "c": 2}, 3, {"b": True, "c": True}, {}).active == ["a"]
    restored = decide(policy, CANDIDATES, ["a"], good, {"b": 2, "c": 2}, 4, {"b": False, "c": True}, {})
    assert restored.active == ["a", "c"] and restored.reason.startswith("restored c")
    merging = decide(policy, CANDIDATES, ["a", "b"], _blocks(0.5, 0.5, 0.7), {"c": 1}, 5, {"c": True}, {})
    assert merging.active == ["b"]  # the merge wins; c waits


def test_loss_trend_is_reported_per_block():
    blocks = [BlockSignal("a", loss=0.8, acc=0.5, previous_loss=1.0), BlockSignal(None, loss=0.5, acc=0.7)]
    signals = decide(BoundaryPolicy("adaptive"), ["a"], ["a"], blocks, {}, 2, {}, {}).signals
    assert signals["loss_trend"] == {"a": -0.2, "final": None}


def test_layers_settled_against_each_layers_own_peak():
    history = [{"x": 1.0, "y": 0.1}, {"x": 0.4, "y": 0.2}]
    assert layers_settled(["x"], history, 0.5)
    assert not layers_settled(["x", "y"], history, 0.5)  # y is at its peak
    assert not layers_settled(["z"], history, 0.5) and not layers_settled([], history, 0.5)


@pytest.mark.parametrize("options, fragment", [
    ({"boundary_policy": "fixed", "merge_gain": 0.1}, "merge_gain go"),
    ({"boundary_policy": "schedule", "boundary_schedule": "1:2", "min_blocks": 2}, "min_blocks go"),
    ({"boundary_policy": "adaptive", "settle_threshold": 0.0}, "settle_threshold must be in"),
    ({"boundary_policy": "adaptive", "boundary_patience": 0}, "boundary_patience must be"),
    ({"boundary_policy": "adaptive", "merge_gain": 2.0}, "merge_gain must be in"),
])
def test_bad_adaptive_options_are_one_line_errors(options, fragment):
    with pytest.raises(LLCompileError, match=fragment) as info:
        BoundaryPolicy(**options)
    assert "\n" not in str(info.value)


def test_to_json_resolves_the_adaptive_defaults_only_for_adaptive():
    assert BoundaryPolicy("adaptive", merge_gain=0.03).to_json() == {
        "boundary_policy": "adaptive", "boundary_schedule": None, "merge_gain": 0.03, "settle_threshold": 0.5,
        "min_blocks": 2, "boundary_patience": 2, "activation_budget": 0.7, "head_warmup": 0.0}
    assert BoundaryPolicy("fixed").to_json() == {"boundary_policy": "fixed", "boundary_schedule": None}
    # a program's recorded options make the same policy again
    assert BoundaryPolicy.from_options(BoundaryPolicy("adaptive").to_json()).to_json() == \
        BoundaryPolicy("adaptive").to_json()
