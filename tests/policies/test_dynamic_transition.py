"""LoCal+SGD's dynamic transition against the settling rule it claims: a layer has settled when its
update norm per unit of learning rate fell below ``update_threshold`` of its own peak. Norms that
rise, fall, and fall only because a cosine schedule lowers the rate (the learning rates are the
runtime's own schedule, averaged per epoch as the run loop does)."""

from __future__ import annotations

import numpy as np
import pytest

from llcompile.policies.learning_mode import LearningMode, dynamic_prefix
from llcompile.train.lr_schedule import learning_rate

MODE = LearningMode(learning_mode="dynamic", start_epoch=2, max_prefix=3, update_threshold=0.5, prefix_step=2)
LAYERS = ["l0", "l1", "l2", "l3"]
EPOCHS, STEPS = 6, 50


def _cosine_lr_means(base_lr: float = 0.1) -> list[float]:
    """Each epoch's mean learning rate under the cosine schedule, as ``train/loop.py`` records it."""
    return [float(np.mean([learning_rate("cosine", base_lr, e * STEPS + s, EPOCHS * STEPS) for s in range(STEPS)]))
            for e in range(EPOCHS)]


def _run(norms_per_unit_lr: list[float], lr_means: list[float]) -> list[int]:
    """The prefix of every epoch when each layer's raw update norm is ``norms_per_unit_lr[e] * lr_means[e]``."""
    prefixes, prefix, history = [0], 0, []
    for epoch in range(1, EPOCHS):
        history.append({layer: norms_per_unit_lr[epoch - 1] * lr_means[epoch - 1] for layer in LAYERS})
        prefix, _ = dynamic_prefix(MODE, epoch + 1, prefix, history, lr_means[:epoch], LAYERS)
        prefixes.append(prefix)
    return prefixes


def test_norms_that_fall_only_because_of_the_schedule_never_settle():
    lr_means = _cosine_lr_means()
    assert lr_means[-1] < 0.5 * lr_means[0]  # the raw norms of the last epochs are below half their peak
    # still learning at the same pace: per unit of rate the norm does not fall, so nothing moves
    assert _run([1.0] * EPOCHS, lr_means) == [0] * EPOCHS
    # the same raw norms read as if the rate were constant walk the prefix to its maximum at the
    # largest step: the trajectory of the run reported before the fix
    raw_prefixes = _run([lr / lr_means[0] for lr in lr_means], [lr_means[0]] * EPOCHS)
    assert raw_prefixes[-1] == MODE.max_prefix


def test_rising_norms_are_not_settled():
    lr_means = _cosine_lr_means()
    assert _run([1.0, 1.2, 1.5, 1.9, 2.5, 3.0], lr_means) == [0] * EPOCHS
    # a rise after a fall is not settled either: 1.0 then 0.6 (above half) then 0.9
    history = [{"l0": n * lr} for n, lr in zip([1.0, 0.6, 0.9], lr_means)]
    assert dynamic_prefix(MODE, 4, 0, history, lr_means[:3], LAYERS)[0] == 0


@pytest.mark.parametrize("per_unit_lr, settles_after", [
    ([1.0, 0.8, 0.45, 0.3, 0.2, 0.1], 3),  # below half its peak in epoch 3: moves at the start of epoch 4
    ([1.0, 1.3, 0.7, 0.66, 0.5, 0.2], 5),  # the peak is epoch 2's 1.3: below 0.65 only in epoch 5
])
def test_falling_norms_settle_below_half_of_their_peak_per_unit_lr(per_unit_lr, settles_after):
    prefixes = _run(per_unit_lr, _cosine_lr_means())
    assert prefixes[settles_after - 1] == 0
    # every layer settles together: prefix_step (2) per epoch, up to the maximum (3)
    assert prefixes[settles_after] == 2
    assert prefixes[settles_after:] == [2, 3, 3, 3, 3, 3][:EPOCHS - settles_after]


def test_the_reason_names_the_norm_per_unit_lr():
    lr_means = [0.1, 0.05]
    settled = dynamic_prefix(MODE, 3, 0, [{"l0": 0.1}, {"l0": 0.01}], lr_means, LAYERS)
    assert settled == (1, "l0 at 0.20 of its peak update norm per unit lr")
    learning = dynamic_prefix(MODE, 3, 0, [{"l0": 0.1}, {"l0": 0.04}], lr_means, LAYERS)
    assert learning == (0, "l0 still learning (update norm per unit lr at 0.80 of its peak)")
