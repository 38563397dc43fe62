"""The Hebbian rules learn what they are known to learn, on both backends' Hebbian stages: on zero-mean
Gaussian data with a known covariance, a linear layer (``--hebbian-activation pre``) trained by Oja's rule
converges to the covariance's first principal component, and by Sanger's rule its filters converge to the
top-k principal components in order (the known basis is the reference), with unit norms; on clustered
data, SoftHebb's filters converge to the clusters they win."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.dense_hebbian import BACKENDS, dense_program, hebbian_stage

DIM, BATCH = 6, 64
EIGENVALUES = np.array([4.0, 2.5, 1.5, 0.6, 0.3, 0.1])  # gaps large enough to separate the top 3 quickly
STEPS, LR = 400, 0.02


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _covariance_basis() -> np.ndarray:
    """A fixed random orthonormal basis: the principal components are its columns, in EIGENVALUES order."""
    q, _ = np.linalg.qr(np.random.default_rng(42).standard_normal((DIM, DIM)))
    return q


def _learned_weight(rule: str, filters: int, backend: str, tmp_path) -> np.ndarray:
    program = dense_program(tmp_path, DIM, filters, hebbian_rule=rule, hebbian_activation="pre")
    stage, to_input = hebbian_stage(backend, program)
    rng = np.random.default_rng(1)
    mix = _covariance_basis() * np.sqrt(EIGENVALUES)  # x = Q sqrt(L) z: covariance Q L Q^T
    labels = to_input(np.zeros(BATCH, np.int64))
    for _ in range(STEPS):
        x = (rng.standard_normal((BATCH, DIM)) @ mix.T).astype(np.float32)
        stage.train_step(to_input(x), labels, LR)
    return stage.state()["w"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_oja_converges_to_the_first_principal_component(backend, tmp_path):
    (w,) = _learned_weight("oja", 1, backend, tmp_path)
    first = _covariance_basis()[:, 0]
    assert abs(np.dot(w, first)) / np.linalg.norm(w) > 0.99
    assert np.linalg.norm(w) == pytest.approx(1.0, abs=0.05)  # Oja's fixed point has unit norm


@pytest.mark.parametrize("backend", BACKENDS)
def test_sanger_converges_to_the_top_principal_components_in_order(backend, tmp_path):
    w = _learned_weight("sanger", 3, backend, tmp_path)
    basis = _covariance_basis()
    cosines = np.abs(w @ basis) / np.linalg.norm(w, axis=1, keepdims=True)  # [filter, component]
    np.testing.assert_allclose(np.diag(cosines), 1.0, atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=0.05)


def test_oja_filters_do_not_compete(tmp_path):
    """The reason for Sanger: three filters under Oja's rule all converge to the same first component."""
    w = _learned_weight("oja", 3, "torch", tmp_path)
    cosines = np.abs(w @ _covariance_basis()[:, 0]) / np.linalg.norm(w, axis=1)
    assert (cosines > 0.99).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_winner_take_all_filters_converge_to_the_clusters_they_win(backend, tmp_path):
    """SoftHebb on three well-separated clusters (centres 5 e_0, 5 e_1, 5 e_2, noise 0.3): each filter moves
    to the unit direction of the cluster it wins at the start (the competition Oja's rule lacks)."""
    program = dense_program(tmp_path, DIM, 3, hebbian_rule="softhebb", hebbian_activation="pre")
    stage, to_input = hebbian_stage(backend, program)
    rng = np.random.default_rng(16)  # a start where the clusters excite different filters, not in order
    initial = rng.standard_normal((3, DIM)).astype(np.float32)
    initial /= np.linalg.norm(initial, axis=1, keepdims=True)
    centres = 5.0 * np.eye(DIM)[:3]
    winners = np.argmax(initial @ centres.T, axis=0)  # the filter each cluster excites most at the start
    assert sorted(winners) == [0, 1, 2]  # one cluster per filter: no filter starts dead
    stage.load_state({"w": initial})
    labels = to_input(np.zeros(BATCH, np.int64))
    for _ in range(STEPS):
        x = centres[rng.integers(0, 3, BATCH)] + 0.3 * rng.standard_normal((BATCH, DIM))
        stage.train_step(to_input(x.astype(np.float32)), labels, LR)
    w = stage.state()["w"]
    for cluster, winner in enumerate(winners):
        assert w[winner] @ np.eye(DIM)[cluster] / np.linalg.norm(w[winner]) > 0.98
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=0.05)
