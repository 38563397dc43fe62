"""The progressive and sliding boundary policies' decisions, from hand-made signals."""

import pytest

from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.errors import LLCompileError
from llcompile.policies.moving_boundaries import Move, choose, progressive_moves, sliding_moves

CUT_POINTS = ["c1", "c2", "c3", "c4", "c5", "c6"]


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


def test_choose_takes_the_first_move_within_the_budget_after_the_patience():
    policy = BoundaryPolicy("sliding", activation_budget=0.5, boundary_patience=2)
    moves = [Move(["c2", "c3"], "first"), Move(["c1", "c4"], "second")]
    decision = choose(policy, ["c1", "c3"], moves, [0.6, 0.45], last_move=0, epoch=2, settled={"c1": True})
    assert decision.active == ["c1", "c4"]  # the first would keep 0.6 x bp's activations
    assert decision.reason == "second (activations 0.45 x bp's, budget 0.5)"
    assert decision.signals == {"settled": {"c1": True, "c3": False},
                                "moves": [{"to": ["c2", "c3"], "activations": 0.6},
                                          {"to": ["c1", "c4"], "activations": 0.45}]}
    # one epoch after the last move, with patience 2: nothing moves
    assert choose(policy, ["c1", "c3"], moves, [0.4, 0.4], last_move=2, epoch=3, settled={}).active == ["c1", "c3"]
    assert choose(policy, ["c1", "c3"], moves, [0.4, 0.4], last_move=2, epoch=4, settled={}).active == ["c2", "c3"]
    over = choose(policy, ["c1", "c3"], moves, [0.7, 0.8], last_move=0, epoch=5, settled={})
    assert over.active == ["c1", "c3"] and over.reason == ""


def test_the_moving_policies_read_their_settings_only():
    policy = BoundaryPolicy("progressive", settle_threshold=0.8)
    assert policy.to_json() == {"boundary_policy": "progressive", "boundary_schedule": None, "settle_threshold": 0.8,
                                "min_blocks": 2, "boundary_patience": 2, "activation_budget": 0.7}
    with pytest.raises(LLCompileError, match="--merge-gain go\\(es\\) with --boundary-policy adaptive$"):
        BoundaryPolicy("sliding", merge_gain=0.1)
    with pytest.raises(LLCompileError, match="adaptive or progressive or sliding"):
        BoundaryPolicy("fixed", min_blocks=3)
