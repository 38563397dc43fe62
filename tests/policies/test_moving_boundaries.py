"""The progressive and sliding boundary policies' decisions, from hand-made signals."""

import pytest

from llcompile.errors import LLCompileError
from llcompile.policies.boundary_decision import BoundaryState
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.policies.moving_boundaries import ProgressiveBoundaries, SlidingBoundaries

CUT_POINTS = ["c1", "c2", "c3", "c4", "c5", "c6"]


def progressive_moves(active, settled, min_blocks):
    policy = ProgressiveBoundaries(BoundaryPolicy("progressive", min_blocks=min_blocks))
    return policy.moves(active, BoundaryState(1, cut_points=CUT_POINTS, settled=settled))


def sliding_moves(active, cut_points, settled, min_blocks):
    policy = SlidingBoundaries(BoundaryPolicy("sliding", min_blocks=min_blocks))
    return policy.moves(active, BoundaryState(1, cut_points=cut_points, settled=settled))


def test_progressive_merges_the_settled_boundaries_earliest_first():
    active = ["c1", "c2", "c4"]
    moves = progressive_moves(active, {"c1": False, "c2": True, "c4": True}, min_blocks=2)
    assert [m.cuts for m in moves] == [["c1", "c4"], ["c1", "c2"]]
    assert moves[0].reason == "merged at c2: the block before it settled"
    assert progressive_moves(active, {}, min_blocks=2) == []  # nothing settled
    assert progressive_moves(["c3"], {"c3": True}, min_blocks=2) == []  # 2 blocks = min_blocks


def test_sliding_moves_a_settled_boundary_one_cut_point_toward_the_output():
    active = ["c1", "c3", "c6"]
    settled = {"c1": True, "c3": True, "c6": True}
    moves = sliding_moves(active, CUT_POINTS, settled, min_blocks=2)
    # c1 -> c2 and c3 -> c4 (neither a boundary yet); c6 is the last cut point: it stays
    assert [m.cuts for m in moves] == [["c2", "c3", "c6"], ["c1", "c4", "c6"]]
    assert moves[0].reason == "slid c1 -> c2: the block before it settled"
    assert [m.cuts for m in sliding_moves(active, CUT_POINTS, {"c3": True}, min_blocks=2)] == [["c1", "c4", "c6"]]


def test_sliding_onto_the_next_boundary_merges_but_not_below_min_blocks():
    moves = sliding_moves(["c2", "c3"], CUT_POINTS, {"c2": True}, min_blocks=2)
    assert [m.cuts for m in moves] == [["c3"]] and "onto the next boundary c3" in moves[0].reason
    assert sliding_moves(["c2", "c3"], CUT_POINTS, {"c2": True}, min_blocks=3) == []


def test_decide_takes_the_first_move_within_the_budget_after_the_patience():
    policy = SlidingBoundaries(BoundaryPolicy("sliding", activation_budget=0.5, boundary_patience=2))
    # settled c1 slides to c2, settled c3 to c4: the moves, with their activation shares
    settled = {"c1": True, "c3": True}

    def decide(shares, last_move, epoch):
        table = {("c2", "c3"): shares[0], ("c1", "c4"): shares[1]}
        return policy.decide(BoundaryState(epoch, active=["c1", "c3"], cut_points=CUT_POINTS, settled=settled,
                                           last_move=last_move, activation_share=lambda cuts: table[tuple(cuts)]))

    decision = decide([0.6, 0.45], last_move=0, epoch=2)
    assert decision.active == ["c1", "c4"]  # the first would keep 0.6 x bp's activations
    assert decision.reason == "slid c3 -> c4: the block before it settled (activations 0.45 x bp's, budget 0.5)"
    assert decision.memory == {"last_move": 2}
    assert decision.signals == {"settled": {"c1": True, "c3": True},
                                "moves": [{"to": ["c2", "c3"], "activations": 0.6},
                                          {"to": ["c1", "c4"], "activations": 0.45}]}
    # one epoch after the last move, with patience 2: nothing moves
    assert decide([0.4, 0.4], last_move=2, epoch=3).active is None
    assert decide([0.4, 0.4], last_move=2, epoch=4).active == ["c2", "c3"]
    over = decide([0.7, 0.8], last_move=0, epoch=5)
    assert over.active is None and over.reason == "" and over.memory == {}
    assert policy.decide(BoundaryState(5, ended=False)) is None  # it decides after an epoch only


def test_the_moving_policies_read_their_settings_only():
    policy = BoundaryPolicy("progressive", settle_threshold=0.8)
    assert policy.to_json() == {"boundary_policy": "progressive", "boundary_schedule": None, "settle_threshold": 0.8,
                                "min_blocks": 2, "boundary_patience": 2, "activation_budget": 0.7}
    with pytest.raises(LLCompileError, match="merge_gain go\\(es\\) with boundary_policy adaptive$"):
        BoundaryPolicy("sliding", merge_gain=0.1)
    with pytest.raises(LLCompileError, match="adaptive or progressive or sliding"):
        BoundaryPolicy("fixed", min_blocks=3)
