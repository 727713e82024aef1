"""stochastic.py: DoublyStochastic against Dykstra in float64, cvxpy's QP and jaxopt."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import birkhoff, doubly_stochastic_sweeps, per_matrix


# The property suite checks the implementation against the same map in
# float64 NumPy, with few sweeps: torch.compile unrolls the loop, and its
# compile time grows with the sweeps. How near the map comes to the exact
# projection, with the default sweeps, is tested below.
class TestDoublyStochasticProperties(PropertySuite):
    # Not an exact projection: no non-expansiveness or optimality test.
    cases = [
        Case(
            kc.DoublyStochastic(3),
            (4, 4),
            per_matrix(doubly_stochastic_sweeps(3)),
            projection=False,
            idempotent=False,
        ),
        Case(
            kc.DoublyStochastic(2),
            (2, 3, 3),
            per_matrix(doubly_stochastic_sweeps(2), batched=True),
            projection=False,
            idempotent=False,
        ),
    ]


def exact_projection(w):
    """The Euclidean projection onto the Birkhoff polytope, by cvxpy (Clarabel)."""
    import cvxpy as cp

    n = w.shape[0]
    x = cp.Variable((n, n))
    constraints = [x >= 0, cp.sum(x, axis=1) == 1, cp.sum(x, axis=0) == 1]
    cp.Problem(cp.Minimize(cp.sum_squares(x - w)), constraints).solve(solver="CLARABEL")
    return x.value


def marginal_error(p):
    return max(np.abs(p.sum(axis=-1) - 1).max(), np.abs(p.sum(axis=-2) - 1).max())


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_near_the_exact_projection_and_exactly_doubly_stochastic(scale):
    n = 10
    w = np.stack([sample((n, n), "normal", seed=seed) * scale for seed in range(3)])
    with float64_enabled():
        p = to_np(kc.DoublyStochastic()(tensor(w, "float64")))
    p32 = to_np(kc.DoublyStochastic()(tensor(w)))
    assert p.min() >= 0 and p32.min() >= 0
    assert marginal_error(p) <= 1e-13 * n
    assert marginal_error(p32) <= 1e-6 * n
    exact = np.stack([exact_projection(m) for m in w])
    ratios = np.linalg.norm(p - w, axis=(1, 2)) / np.linalg.norm(exact - w, axis=(1, 2))
    # Never nearer than the exact projection (up to cvxpy's accuracy), and barely farther.
    assert ratios.min() >= 1 - 1e-6, ratios
    assert ratios.max() <= 1 + 1e-3, ratios


def test_large_entries_stay_in_the_polytope_near_the_best_assignment():
    # For W * s with s large the projection tends to the permutation matrix
    # that maximizes <W, X>, and the sweeps slow down (as Sinkhorn's do for
    # a small regularization): the result is in the polytope, and its
    # distance to W within 1e-6 (relative) of the permutation's.
    from scipy.optimize import linear_sum_assignment

    w = sample((3, 8, 8), "large", seed=7)
    with float64_enabled():
        got = to_np(kc.DoublyStochastic()(tensor(w, "float64")))
    assert got.min() >= 0 and marginal_error(got) <= 1e-12
    for m, p in zip(w, got, strict=True):
        rows, cols = linear_sum_assignment(-m)
        best = np.zeros_like(m)
        best[rows, cols] = 1.0
        assert np.linalg.norm(p - m) <= np.linalg.norm(best - m) * (1 + 1e-6)


def test_more_sweeps_reach_the_exact_projection():
    w = np.stack([sample((6, 6), "normal", seed=seed) for seed in range(3)])
    with float64_enabled():
        p = to_np(kc.DoublyStochastic(200)(tensor(w, "float64")))
    np.testing.assert_allclose(p, per_matrix(birkhoff, batched=True)(w), rtol=0, atol=1e-9)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jaxopt runs on JAX only")
def test_matches_jaxopt_projection_birkhoff():
    import jax
    from jaxopt.projection import projection_birkhoff

    w = sample((8, 8), "normal", seed=3)
    want = np.asarray(jax.jit(projection_birkhoff)(np.asarray(w, "float32")), "float64")
    got = to_np(kc.DoublyStochastic()(tensor(w)))
    # jaxopt's solver stops at its own tolerance (~1e-5 on the marginals).
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    np.testing.assert_allclose(got, exact_projection(w), rtol=0, atol=1e-4)


def test_degenerate_matrices():
    c = kc.DoublyStochastic()
    assert to_np(c(tensor([[-3.0]]))).tolist() == [[1.0]]
    rng = np.random.default_rng(0)
    feasible = sum(f * np.eye(5)[rng.permutation(5)] for f in (0.5, 0.3, 0.2))
    negative = -np.abs(sample((5, 5), seed=5))
    got = to_np(c(tensor(np.stack([np.zeros((5, 5)), feasible, negative]))))
    np.testing.assert_allclose(got[0], np.full((5, 5), 0.2), rtol=0, atol=1e-7)
    np.testing.assert_allclose(got[1], feasible, rtol=0, atol=1e-6)
    assert got[2].min() >= 0 and marginal_error(got[2]) <= 1e-6
    np.testing.assert_allclose(got[2], birkhoff(negative), rtol=0, atol=1e-5)


def test_rejects_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="DoublyStochastic.*iterations.*>= 1.*0"):
        kc.DoublyStochastic(iterations=0)
    with pytest.raises(ValueError, match=r"DoublyStochastic needs square.*\(3, 4\)"):
        kc.DoublyStochastic()(tensor(np.ones((3, 4))))
