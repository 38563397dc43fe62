"""Boundary policies: schedule syntax, what is in force when, and the checks at transform time."""

import pytest

import llcompile
from llcompile.policies.boundary_policy import BoundaryPolicy, ScheduleEntry
from llcompile.errors import LLCompileError


def test_schedule_entries_and_the_entry_in_force():
    policy = BoundaryPolicy("schedule", "1:4, 3:a+b,5:1")
    assert policy.entries() == [ScheduleEntry(1, blocks=4), ScheduleEntry(3, cuts=("a", "b")),
                                ScheduleEntry(5, blocks=1)]
    assert [policy.entry_for(e).epoch for e in range(1, 7)] == [1, 1, 3, 3, 5, 5]
    assert BoundaryPolicy("schedule", "2:2").entry_for(1) is None  # before the first entry: the program's own
    assert ScheduleEntry(3, cuts=("a", "b")).options() == {"blocks": None, "cuts": ["a", "b"]}
    assert ScheduleEntry(3, blocks=2).options() == {"blocks": 2, "cuts": None}


@pytest.mark.parametrize("policy, schedule, fragment", [
    ("sometimes", None, "boundary_policy must be one of"),
    ("schedule", None, "needs one"),
    ("fixed", "1:4", "goes with boundary_policy='schedule'"),
    ("schedule", "0:4", "EPOCH >= 1"),
    ("schedule", "x:4", "EPOCH:K"),
    ("schedule", "2", "EPOCH:K"),
    ("schedule", "1:0", "K must be >= 1"),
    ("schedule", "3:4,2:2", "epochs must increase"),
    ("schedule", "2:4,2:2", "epochs must increase"),
])
def test_bad_policies_are_one_line_errors(policy, schedule, fragment):
    with pytest.raises(LLCompileError, match=fragment) as info:
        BoundaryPolicy(policy, schedule)
    assert "\n" not in str(info.value)


def test_transform_checks_every_scheduled_partition(zoo_file):
    path = zoo_file("resnet20")
    program = llcompile.transform(path, "dbl", boundary_policy="schedule", boundary_schedule="1:4,3:2")
    assert program.options["boundary_policy"] == "schedule" and program.options["boundary_schedule"] == "1:4,3:2"
    assert llcompile.transform(path, "dbl").options["boundary_policy"] == "adaptive"  # the default
    with pytest.raises(LLCompileError, match="entry for epoch 3.*at most"):
        llcompile.transform(path, "dbl", boundary_policy="schedule", boundary_schedule="1:4,3:99")
    with pytest.raises(LLCompileError, match="entry for epoch 2.*not a cut point: nope"):
        llcompile.transform(path, "dbl", boundary_policy="schedule", boundary_schedule="2:nope")
    with pytest.raises(LLCompileError, match="takes no boundary_policy"):
        llcompile.transform(path, "local-sgd", boundary_policy="fixed")


def test_adaptive_policy_is_recorded_with_its_thresholds(zoo_file, tmp_path):
    from tests.cli.test_commands import assert_user_error, run

    path = zoo_file("resnet20")
    program = llcompile.transform(path, "dbl-hebbian", boundary_policy="adaptive", min_blocks=3)
    assert {k: program.options[k] for k in ("boundary_policy", "merge_gain", "min_blocks", "boundary_patience")} == {
        "boundary_policy": "adaptive", "merge_gain": 0.01, "min_blocks": 3, "boundary_patience": 2}
    assert "merge_gain" not in llcompile.transform(path, "dbl", boundary_policy="fixed").options
    assert_user_error(run("transform", path, "-o", tmp_path / "p", "--boundary-policy", "fixed", "--merge-gain", "0.1"),
                      "--merge-gain go(es) with --boundary-policy adaptive")
    assert not (tmp_path / "p").exists()


def test_every_policy_has_a_rule_and_the_schedule_decides_when_an_epoch_begins():
    from llcompile.policies.boundary_decision import BoundaryState
    from llcompile.policies.boundary_rules import BOUNDARY_RULES, boundary_rule
    from llcompile.policies.boundary_policy import POLICIES

    assert tuple(BOUNDARY_RULES) == POLICIES
    schedule = boundary_rule(BoundaryPolicy("schedule", "2:4,3:a+b"))
    assert schedule.decide(BoundaryState(1, ended=False)) is None  # before the first entry: the program's own
    decision = schedule.decide(BoundaryState(3, ended=False))
    assert decision.entry == ScheduleEntry(3, cuts=("a", "b")) and decision.reason == "schedule: cuts a, b from epoch 3"
    assert schedule.decide(BoundaryState(3)) is None
    assert boundary_rule(BoundaryPolicy("fixed")).decide(BoundaryState(3, ended=False)) is None
