"""LoCal+SGD's learning-mode selection (pure functions): static schedules, the default maximum prefix,
the dynamic transition, weak supervision, option checks; values computed by hand."""

from __future__ import annotations

import dataclasses

import pytest

from llcompile.analysis.structure import analyze
from llcompile.compiler.transform import transform
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import load
from llcompile.policies.learning_mode import MODES, LearningMode, dynamic_prefix, static_prefix, weak_supervision_factor
from llcompile.policies.transition_rules import PrefixDecision

EPOCHS = range(1, 9)

# ---------------------------------------------------------------- static schedules

# start_epoch 3, ramp_epochs 4, max_prefix 6: progress (e - 3 + 1) / 4 = .25 .5 .75 1 1.25 1.5 for epochs 3..8
# linear: 6 * progress = 1.5 3 4.5 6 (halves round up) then capped at 6
# step:   half the maximum (3) while progress <= .5, then 6
# exp:    6 * (1 - exp(-3 progress)) = 3.17 4.66 5.37 5.70 5.86 5.93
STATIC = {
    ("linear", 3, 4, 6): [0, 0, 2, 3, 5, 6, 6, 6],
    ("step", 3, 4, 6): [0, 0, 3, 3, 6, 6, 6, 6],
    ("exp", 3, 4, 6): [0, 0, 3, 5, 5, 6, 6, 6],
    # start at once, reach the maximum in the first epoch
    ("linear", 1, 1, 4): [4] * 8,
    ("step", 1, 1, 4): [4] * 8,
    ("exp", 1, 1, 4): [4] * 8,  # 4 * (1 - e^-3) = 3.80
    # a small maximum: never below 1 once started, never above the maximum
    ("linear", 2, 4, 1): [0, 1, 1, 1, 1, 1, 1, 1],
    ("exp", 2, 3, 2): [0, 1, 2, 2, 2, 2, 2, 2],  # 2 * (1 - e^-1) = 1.26, 2 * (1 - e^-2) = 1.73
    # linear over 3 epochs to 5: 5/3, 10/3, 5
    ("linear", 2, 3, 5): [0, 2, 3, 5, 5, 5, 5, 5],
    # step with an odd maximum: half of 5 is 2.5 -> 3
    ("step", 2, 2, 5): [0, 3, 5, 5, 5, 5, 5, 5],
    # a zero maximum keeps everything on SGD
    ("linear", 1, 2, 0): [0] * 8,
    ("step", 1, 2, 0): [0] * 8,
}


@pytest.mark.parametrize("schedule, start, ramp, maximum", STATIC)
def test_static_schedules_by_hand(schedule, start, ramp, maximum):
    mode = LearningMode(schedule=schedule, start_epoch=start, ramp_epochs=ramp, max_prefix=maximum)
    assert [static_prefix(mode, epoch) for epoch in EPOCHS] == STATIC[schedule, start, ramp, maximum]


@pytest.mark.parametrize("schedule", ["linear", "step", "exp"])
def test_static_schedules_only_grow_up_to_the_maximum(schedule):
    for start in (1, 2, 5):
        for ramp in (1, 2, 3, 7):
            for maximum in range(0, 12):
                mode = LearningMode(schedule=schedule, start_epoch=start, ramp_epochs=ramp, max_prefix=maximum)
                prefixes = [static_prefix(mode, epoch) for epoch in range(1, 40)]
                assert prefixes == sorted(prefixes)
                assert all(p == 0 for p in prefixes[:start - 1])
                assert max(prefixes) == maximum


# ---------------------------------------------------------------- the default maximum prefix


@pytest.mark.parametrize("macs, expected", [
    ([10, 20, 30, 40], 2),  # 10, 30 <= 50 < 60
    ([1, 1, 1, 1], 2),  # exactly half is allowed
    ([60, 10, 10], 0),  # the first segment alone is more than half
    ([0, 0, 0, 5], 3),  # free segments, but the last one always stays on SGD
    ([0, 0], 1),
    ([7], 0),  # one segment: nothing to localize
    ([5, 5, 1, 100], 3),
])
def test_resolved_default_max_prefix(macs, expected):
    mode = LearningMode().resolved(macs)
    assert mode.max_prefix == expected
    assert dataclasses.replace(mode, max_prefix=None) == LearningMode()  # nothing else changes


def test_resolved_keeps_an_explicit_max_prefix_and_refuses_all_segments():
    assert LearningMode(max_prefix=3).resolved([1, 1, 1, 1]).max_prefix == 3
    assert LearningMode(max_prefix=0).resolved([1, 1]).max_prefix == 0
    with pytest.raises(LLCompileError, match="at most 3"):
        LearningMode(max_prefix=4).resolved([1, 1, 1, 1])


# ResNet-20 on 3x32x32 by hand: the stem 32*32*16*27; a 16-channel block 2 * 32*32*16*16*9; a block that
# halves the size and doubles the channels 16*16*32*16*9 + 16*16*32*32*9 + its 1x1 shortcut 16*16*32*16
# (8*8*64*32*9 + 8*8*64*64*9 + 8*8*64*32 on the last stage: the same count); a 32- or 64-channel block
# 2 * 16*16*32*32*9 (= 2 * 8*8*64*64*9); the classifier 64*10
STEM, BLOCK, DOWN, FC = 442_368, 4_718_592, 3_670_016, 640
RESNET20_SEGMENT_MACS = [STEM, BLOCK, BLOCK, BLOCK, DOWN, BLOCK, BLOCK, DOWN, BLOCK, BLOCK, FC]


def test_transform_records_the_resolved_learning_mode(zoo_file):
    path = zoo_file("resnet20")
    assert [segment.macs for segment in analyze(load(path)).segments] == RESNET20_SEGMENT_MACS
    # half of the 40,813,184 forward MACs is 20,406,592: the first five segments hold 18,268,160, six
    # would hold 22,986,752
    expected = 5
    options = transform(path, "local-sgd", prefix=1, schedule="exp", start_epoch=3).options
    assert options["max_prefix"] == expected
    assert options["schedule"] == "exp" and options["start_epoch"] == 3
    assert LearningMode.from_options(options) == LearningMode(schedule="exp", start_epoch=3, max_prefix=expected)
    assert transform(path, "local-sgd", prefix=1, max_prefix=2).options["max_prefix"] == 2


# ---------------------------------------------------------------- dynamic transition

DYNAMIC = LearningMode(learning_mode="dynamic", start_epoch=2, max_prefix=4, update_threshold=0.5, prefix_step=2)
LAYERS = ["l0", "l1", "l2", "l3", "l4"]  # the transition layer of prefix 0..4


def _history(*per_layer: list[float]) -> list[dict[str, float]]:
    """Epoch records from one norm list per layer (l0, l1, ...)."""
    epochs = max(len(norms) for norms in per_layer)
    return [{LAYERS[i]: norms[e] for i, norms in enumerate(per_layer) if e < len(norms)} for e in range(epochs)]


@pytest.mark.parametrize("epoch, current, history, expected", [
    (1, 0, _history([0.1, 0.01]), 0),  # before the start epoch: nothing moves, whatever the norms
    (2, 0, [], 0),  # no norm measured yet
    (2, 0, _history([0.8]), 0),  # one norm is its own peak: still learning
    (3, 0, _history([0.8, 0.3], [0.9, 0.6]), 1),  # l0 below half its peak; l1 at 0.67 of its peak: stop
    (3, 0, _history([0.8, 0.3], [0.9, 0.4]), 2),  # both settled: two segments in one epoch
    (3, 0, _history([0.8, 0.3], [0.9, 0.4], [0.9, 0.1]), 2),  # at most prefix_step (2) per epoch
    (3, 0, _history([0.8, 0.4]), 0),  # exactly half: not below it
    (4, 0, _history([0.8, 0.5, 0.48]), 0),  # falling slowly, above half of the peak: still learning
    (4, 0, _history([0.8, 0.5, 0.6]), 0),  # rose: still learning, never settled
    (4, 0, _history([0.8, 0.5, 0.38]), 1),  # below half of the peak 0.8 (and falling fast)
    (4, 0, _history([0.8, 0.5, 0.44]), 0),  # falling fast, above half of the peak
    (4, 0, _history([0.8, 0.9, 0.6]), 0),  # falling, above half of its peak 0.9
    (4, 3, _history([], [], [], [0.9, 0.1], [0.9, 0.1]), 4),  # never past the maximum 4
    (5, 4, _history([0.1], [0.1], [0.1], [0.1], [0.9, 0.01]), 4),  # at the maximum: stays
])
def test_dynamic_prefix(epoch, current, history, expected):
    prefix, reason = dynamic_prefix(DYNAMIC, epoch, current, history, [1.0] * len(history), LAYERS)
    assert prefix == expected
    assert isinstance(reason, str) and reason


def test_dynamic_prefix_walks_to_the_maximum_and_stops():
    mode = dataclasses.replace(DYNAMIC, prefix_step=1)
    history, current, prefixes = [], 0, []
    for epoch in range(1, 10):
        history.append({layer: 1.0 / epoch**2 for layer in LAYERS})  # every layer settling fast
        current, _ = dynamic_prefix(mode, epoch + 1, current, history, [1.0] * len(history), LAYERS)
        prefixes.append(current)
    # after epoch 1 every norm is its own peak; from epoch 2 on the transition layer is at 1/4 or less of
    # its peak, and one segment (prefix_step 1) moves per epoch up to the maximum 4
    assert prefixes == [0, 1, 2, 3, 4, 4, 4, 4, 4]


# ---------------------------------------------------------------- weak supervision


def test_weak_supervision_decays_on_a_rising_loss_and_restores_up_to_one():
    mode = LearningMode(lr_decay=0.5)
    losses = [2.0, 2.1, 2.2, 2.2, 1.9, 1.8, 1.9, 1.7]
    factor, factors = 1.0, []
    for epoch in range(1, len(losses) + 1):
        factor = weak_supervision_factor(mode, factor, losses[:epoch])
        factors.append(factor)
    # one loss: nothing to compare; rises halve; a flat or falling loss doubles back, capped at 1
    assert factors == [1.0, 0.5, 0.25, 0.5, 1.0, 1.0, 0.5, 1.0]
    assert weak_supervision_factor(LearningMode(lr_decay=0.8), 0.5, [1.0, 0.9]) == pytest.approx(0.625)
    assert weak_supervision_factor(LearningMode(lr_decay=0.8), 0.5, [1.0, 1.1]) == pytest.approx(0.4)


def test_weak_supervision_none_keeps_the_factor():
    mode = LearningMode(weak_supervision="none")
    assert weak_supervision_factor(mode, 1.0, [1.0, 2.0]) == 1.0
    assert weak_supervision_factor(mode, 0.25, [2.0, 1.0]) == 0.25


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("option, value", [
    ("learning_mode", "random"), ("schedule", "cubic"), ("weak_supervision", "always"),
    ("start_epoch", 0), ("ramp_epochs", 0), ("max_prefix", -1), ("update_threshold", 0.0),
    ("update_threshold", -0.1), ("prefix_step", 0),
    ("hebbian_lr", -1e-3), ("lr_decay", 0.0), ("lr_decay", 1.5),
])
def test_bad_values_are_refused(option, value):
    with pytest.raises(LLCompileError) as info:
        LearningMode(**{option: value})
    assert str(info.value).startswith(f"{option} must") and "\n" not in str(info.value)


def test_edge_values_are_accepted_and_act_as_documented():
    mode = LearningMode(lr_decay=1.0, hebbian_lr=0.0, max_prefix=0, start_epoch=1, ramp_epochs=1,
                        update_threshold=1.0)
    assert (mode.lr_decay, mode.hebbian_lr, mode.max_prefix, mode.start_epoch, mode.ramp_epochs,
            mode.update_threshold) == (1.0, 0.0, 0, 1, 1, 1.0)
    assert [static_prefix(mode, epoch) for epoch in EPOCHS] == [0] * 8  # a zero maximum: nothing localized
    assert weak_supervision_factor(mode, 1.0, [1.0, 2.0]) == 1.0  # decay 1: a rising loss changes nothing
    # start 1, ramp 1: the whole maximum from the first epoch
    assert static_prefix(dataclasses.replace(mode, max_prefix=3), 1) == 3


def test_from_options_takes_its_own_keys_and_skips_none():
    mode = LearningMode.from_options({"schedule": "step", "max_prefix": None, "blocks": 4, "prefix": 2})
    assert mode == LearningMode(schedule="step")
    assert LearningMode.from_options(mode.to_json()) == mode


# ---------------------------------------------------------------- the learning modes as rules


def test_each_mode_decides_its_prefix_at_its_moment_and_both_apply_weak_supervision():
    from llcompile.policies.transition_rules import TRANSITION_RULES, PrefixState, transition_rule

    assert tuple(TRANSITION_RULES) == MODES
    static = transition_rule(LearningMode(start_epoch=1, ramp_epochs=2, max_prefix=4))
    assert static.decide(PrefixState(2, prefix=2, factor=1.0)) == PrefixDecision(4, "linear schedule", 1.0)
    assert static.decide(PrefixState(2, 4, 1.0, ended=True, train_losses=[1.0, 2.0])) == \
        PrefixDecision(None, "", 0.5)
    dynamic = transition_rule(DYNAMIC)
    assert dynamic.decide(PrefixState(3, prefix=0, factor=1.0)).prefix is None  # it decides after an epoch
    after = dynamic.decide(PrefixState(2, 0, 1.0, True, _history([0.8, 0.3], [0.9, 0.4]), [1.0, 1.0], [2.0, 1.0],
                                       LAYERS))
    assert (after.prefix, after.factor) == (2, 1.0) and after.reason.startswith("l0 at 0.37")
