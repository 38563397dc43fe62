"""Cheaper Hebbian updates on both backends: ``--hebbian-subsample k`` updates from every k-th sample of the
batch (against the numpy definition on that subsample), and a step without an update (``--hebbian-every``)
leaves the weights and computes the same activation and BN statistics as a step with one."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.dense_hebbian import BACKENDS, as_numpy, dense_program, hebbian_stage
from tests.reference import dense_hebbian_update

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DIM, FILTERS, BATCH, LR = 5, 4, 16, 0.1


def _batch(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, DIM)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_subsampled_update_is_the_update_of_every_kth_sample(backend, tmp_path):
    program = dense_program(tmp_path, DIM, FILTERS, hebbian_activation="pre", hebbian_subsample=4)
    assert program.options["hebbian_subsample"] == 4
    stage, to_input = hebbian_stage(backend, program)
    w = stage.state()["w"]
    x = _batch()
    stage.train_step(to_input(x), to_input(np.zeros(BATCH, np.int64)), LR)
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    expected = dense_hebbian_update(x[::4], y[::4], w, LR, decay=1.0, renormalize=False)
    np.testing.assert_allclose(stage.state()["w"], expected, rtol=1e-5, atol=1e-6)
    full = dense_hebbian_update(x, y, w, LR, decay=1.0, renormalize=False)
    assert not np.allclose(expected, full, rtol=0, atol=1e-4)  # the subsample matters


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_without_update_keeps_the_weights_and_computes_the_same_forward(backend, tmp_path):
    program = dense_program(tmp_path, DIM, FILTERS, bn=True)
    labels = np.zeros(BATCH, np.int64)
    updating, to_input = hebbian_stage(backend, program)
    forward_only, _ = hebbian_stage(backend, program)
    initial = forward_only.state()
    with_update = updating.train_step(to_input(_batch()), to_input(labels), LR)
    without = forward_only.train_step(to_input(_batch()), to_input(labels), LR, update=False)
    np.testing.assert_allclose(as_numpy(without.output), as_numpy(with_update.output), rtol=1e-6, atol=1e-6)
    after, updated = forward_only.state(), updating.state()
    np.testing.assert_array_equal(after["w"], initial["w"])
    assert not np.allclose(updated["w"], initial["w"], atol=1e-4)
    for buffer in ("mean", "var"):  # the BN statistics follow the batch either way
        assert not np.allclose(after[buffer], initial[buffer])
        np.testing.assert_allclose(after[buffer], updated[buffer], rtol=1e-6, atol=1e-7)
    # the steps without an update read the weights and BN statistics the updating steps wrote
    forward_only.train_step(to_input(_batch(1)), to_input(labels), LR)
    fresh, _ = hebbian_stage(backend, program)
    fresh.load_state(forward_only.state())
    without = forward_only.train_step(to_input(_batch(2)), to_input(labels), LR, update=False)
    with_update = fresh.train_step(to_input(_batch(2)), to_input(labels), LR)
    np.testing.assert_allclose(as_numpy(without.output), as_numpy(with_update.output), rtol=1e-6, atol=1e-6)
    for buffer in ("mean", "var"):
        np.testing.assert_allclose(forward_only.state()[buffer], fresh.state()[buffer], rtol=1e-6, atol=1e-7)
