"""stochastic.py: DoublyStochastic and Transport against their float64 map, Dykstra, cvxpy's QP
and jaxopt."""

import re

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import EPS, sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import (
    birkhoff,
    doubly_stochastic_sweeps,
    per_matrix,
    transport_qp,
    transport_sweeps,
)


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
    n = w.shape[0]
    return transport_qp(np.ones(n), np.ones(n))(w)


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


# ------------------------------------------------------------------- Transport

# Marginals of the tests: rectangular both ways, and totals of very unequal sizes.
WIDE = (np.array([1.0, 2.0, 2.0]), np.ones(5))
TALL = (np.full(5, 0.6), np.array([0.5, 1.0, 1.5]))
UNIFORM = (np.ones(4), np.full(6, 4 / 6))
UNEQUAL = (np.array([100.0, 1.0, 0.01, 5.0]), np.array([50.0, 50.0, 0.5, 0.51, 5.0]))
SPREAD = (np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]), np.array([0.111, 11.0, 100.0]))
MARGINALS = {"wide": WIDE, "tall": TALL, "uniform": UNIFORM, "unequal": UNEQUAL, "spread": SPREAD}


def transport_error(p, r, c):
    """The largest error of a marginal of `p` (batched over leading axes), relative to sum(r)."""
    rows = np.abs(p.sum(axis=-1) - r).max()
    return max(rows, np.abs(p.sum(axis=-2) - c).max()) / r.sum()


def in_transport_polytope(r, c):
    """`feasible(p, tol)`: entries >= 0, every marginal within `tol * max(m, n) * sum(r)`.

    The rounding step fills every row and column exactly but for float
    rounding, of entries up to the total `sum(r)`: `tol` of that per term of
    the longest sum.
    """
    r, c = np.asarray(r, dtype="float64"), np.asarray(c, dtype="float64")

    def feasible(p, tol):
        return p.min() >= 0 and transport_error(p, r, c) <= tol * max(len(r), len(c))

    return feasible


def transport_case(marginals, iterations, shape, batched=False):
    r, c = marginals
    return Case(
        kc.Transport(r, c, iterations),
        shape,
        per_matrix(transport_sweeps(r, c, iterations), batched=batched),
        projection=False,
        idempotent=False,
        feasible=in_transport_polytope(r, c),
    )


# As for DoublyStochastic: the property suite checks the map against the same
# map in float64 NumPy, with few sweeps; how near it comes to the exact
# projection is measured against cvxpy below.
class TestTransportProperties(PropertySuite):
    cases = [
        transport_case(WIDE, 3, (3, 5)),
        transport_case(TALL, 2, (2, 5, 3), batched=True),
        transport_case(UNEQUAL, 3, (4, 5)),
        transport_case(UNIFORM, 2, (3, 3, 4, 6), batched=True),  # a Conv2D kernel's taps
    ]


def transport_inputs(r, c, scale, seeds=3):
    """Normal matrices of entries `scale` times the mean entry of a transport plan."""
    unit = r.sum() / (len(r) * len(c))
    return np.stack(
        [sample((len(r), len(c)), "normal", seed=s) * scale * unit for s in range(seeds)]
    )


def both_dtypes(constraint, w):
    with float64_enabled():
        p64 = to_np(constraint(tensor(w, "float64")))
    return p64, to_np(constraint(tensor(w)))


# Measured with the default 50 sweeps over 5 seeds of these marginals (and
# 10 x 10 ones): at scales 0.1 and 1 the largest entry of |P(W) - QP(W)|,
# relative to the largest of QP(W), was 2e-9 in float64 and 5e-7 in float32,
# checked below with a factor 4 of room. At scale 10 the entries differed by
# up to 6e-3 (SPREAD; 9e-6 for the others) while ||P(W) - W|| was within
# 3e-5 of ||QP(W) - W||: there only the distance is checked.
NEAR_QP = {0.1: (1e-8, 2e-6), 1.0: (1e-8, 2e-6)}


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("name", list(MARGINALS))
def test_transport_is_near_the_exact_projection_and_in_the_polytope(name, scale):
    r, c = MARGINALS[name]
    w = transport_inputs(r, c, scale)
    p64, p32 = both_dtypes(kc.Transport(r, c), w)
    exact = np.stack([transport_qp(r, c)(m) for m in w])
    assert transport_error(exact, r, c) <= 1e-11  # cvxpy solved to its tolerances
    assert p64.min() >= 0 and p32.min() >= 0
    assert transport_error(p64, r, c) <= 4 * EPS["float64"] * max(len(r), len(c))
    assert transport_error(p32, r, c) <= 4 * EPS["float32"] * max(len(r), len(c))
    ratios = np.linalg.norm(p64 - w, axis=(1, 2)) / np.linalg.norm(exact - w, axis=(1, 2))
    # Never nearer than the exact projection (a point of the set), and barely farther.
    assert ratios.min() >= 1 - 1e-9, ratios
    assert ratios.max() <= 1 + 1e-4, ratios
    if scale in NEAR_QP:
        atol64, atol32 = NEAR_QP[scale]
        top = np.abs(exact).max()
        np.testing.assert_allclose(p64, exact, rtol=0, atol=atol64 * top)
        np.testing.assert_allclose(p32, exact, rtol=0, atol=atol32 * top)


def test_transport_with_large_entries_stays_within_a_thousandth_of_the_projection():
    # As for DoublyStochastic, entries 100 times the plan's slow the sweeps
    # down (measured: the distance within 8e-4 of the projection's), and the
    # marginals stay exact.
    for r, c in (WIDE, TALL, UNEQUAL):
        w = transport_inputs(r, c, 100.0)
        p64, p32 = both_dtypes(kc.Transport(r, c), w)
        exact = np.stack([transport_qp(r, c)(m) for m in w])
        ratios = np.linalg.norm(p64 - w, axis=(1, 2)) / np.linalg.norm(exact - w, axis=(1, 2))
        assert 1 - 1e-9 <= ratios.min() and ratios.max() <= 1 + 2e-3, ratios
        assert transport_error(p64, r, c) <= 4 * EPS["float64"] * len(c)
        assert transport_error(p32, r, c) <= 4 * EPS["float32"] * len(c)


def test_more_sweeps_reach_the_exact_transport_projection():
    for r, c in (WIDE, TALL, UNIFORM):
        w = transport_inputs(r, c, 10.0)
        with float64_enabled():
            p = to_np(kc.Transport(r, c, 500)(tensor(w, "float64")))
        exact = np.stack([transport_qp(r, c)(m) for m in w])
        np.testing.assert_allclose(p, exact, rtol=0, atol=1e-8 * np.abs(exact).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["normal", "ties", "large"])
def test_transport_marginals_are_exact_to_rounding(kind, dtype):
    eps = EPS[dtype]
    for r, c in MARGINALS.values():
        w = np.stack([sample((len(r), len(c)), kind, seed=s) for s in range(4)])
        w = np.concatenate([w, -np.abs(w[:1]), np.zeros_like(w[:1])])
        with float64_enabled():
            p = to_np(kc.Transport(r, c, 5)(tensor(w, dtype)))
        assert p.min() >= 0
        assert transport_error(p, r, c) <= 4 * eps * max(len(r), len(c)), (kind, r)


def test_doubly_stochastic_is_transport_with_every_marginal_one():
    w = np.stack([sample((6, 6), "normal", seed=s) * 3 for s in range(3)])
    for dtype in ("float32", "float64"):
        with float64_enabled():
            got = to_np(kc.DoublyStochastic(7)(tensor(w, dtype)))
            want = to_np(kc.Transport(np.ones(6), np.ones(6), 7)(tensor(w, dtype)))
        np.testing.assert_array_equal(got, want)


def test_transport_on_hand_computed_matrices():
    # Zeros: X = r_i / n + c_j / m - sum(r) / (m n), here exactly 0 in a corner.
    got = to_np(kc.Transport([1.0, 3.0], [1.0, 3.0])(tensor(np.zeros((2, 2)))))
    np.testing.assert_allclose(got, [[0.0, 1.0], [1.0, 2.0]], rtol=0, atol=1e-6)
    w = [[2.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    got = to_np(kc.Transport([2.0, 1.0], [1.0, 1.0, 1.0])(tensor(w)))
    np.testing.assert_allclose(got, [[1.0, 0.25, 0.75], [0.0, 0.75, 0.25]], rtol=0, atol=1e-6)
    # One column: X = r; one row: X = c; one entry: the total.
    np.testing.assert_allclose(
        to_np(kc.Transport([1.0, 2.0], [3.0])(tensor([[-5.0], [7.0]]))), [[1.0], [2.0]]
    )
    np.testing.assert_allclose(
        to_np(kc.Transport([3.0], [1.0, 2.0])(tensor([[9.0, -1.0]]))), [[1.0, 2.0]]
    )
    assert to_np(kc.Transport([2.5], [2.5])(tensor([[-3.0]]))).tolist() == [[2.5]]


def test_a_feasible_plan_is_kept():
    rng = np.random.default_rng(4)
    plan = rng.uniform(0.1, 1.0, size=(4, 5))
    got = to_np(kc.Transport(plan.sum(axis=1), plan.sum(axis=0))(tensor(plan)))
    np.testing.assert_allclose(got, plan, rtol=0, atol=1e-6)


def test_transport_batches_over_leading_axes():
    r, c = TALL
    w = sample((2, 3, 5, 3), "normal", seed=11)
    t = kc.Transport(r, c, 10)
    got = to_np(t(tensor(w)))
    for index in np.ndindex(2, 3):
        np.testing.assert_allclose(got[index], to_np(t(tensor(w[index]))), rtol=0, atol=1e-6)


def test_transport_totals_are_matched_within_a_relative_1e_6():
    # Float32 marginals: sum(r) is 1 + 3e-8 in float64; the columns are scaled to it.
    r = np.full(3, 1 / 3, dtype="float32").astype("float64")
    t = kc.Transport(r, np.full(4, 0.25))
    assert t.col_sums.tolist() == [0.25] * 4  # stored as given
    with float64_enabled():
        p = to_np(t(tensor(sample((3, 4), seed=2), "float64")))
    assert transport_error(p, r, np.full(4, 0.25 * r.sum())) <= 1e-15
    with pytest.raises(
        ValueError,
        match=r"Transport.*equal totals.*sum\(row_sums\) = 1.0.*sum\(col_sums\) = 1.00001",
    ):
        kc.Transport([0.5, 0.5], [0.5, 0.50001])


@pytest.mark.parametrize(
    "arguments, match",
    [
        ((1.0, [1.0]), r"Transport: `row_sums` must be a non-empty 1-D array.*got 1.0"),
        (([[1.0]], [1.0]), r"Transport: `row_sums` must be a non-empty 1-D array.*\[\[1.0\]\]"),
        (([], [1.0]), r"Transport: `row_sums` must be a non-empty 1-D array.*\[\]"),
        (([1.0, 0.0], [1.0]), r"Transport: `row_sums` must hold finite numbers > 0, got \[0.0\]"),
        (([1.0], [2.0, -1.0]), r"Transport: `col_sums` must hold finite numbers > 0, got \[-1.0\]"),
        (([1.0], [np.inf]), r"Transport: `col_sums` must hold finite numbers > 0, got \[inf\]"),
        (([1.0], [np.nan]), r"Transport: `col_sums` must not contain NaN"),
        (([1.0], ["a"]), r"Transport: `col_sums` must be real numbers"),
        (
            ([1.0, 2.0], [1.0]),
            r"Transport: `row_sums` and `col_sums` must have equal totals, got "
            r"sum\(row_sums\) = 3.0 and sum\(col_sums\) = 1.0",
        ),
        (([1.0], [1.0], 0), r"Transport: `iterations` must be an int >= 1, got 0"),
        (([1.0], [1.0], 2.5), r"Transport: `iterations` must be an int >= 1, got 2.5"),
    ],
)
def test_transport_rejects_bad_arguments(arguments, match):
    with pytest.raises(ValueError, match=match):
        kc.Transport(*arguments)


def test_transport_rejects_a_matrix_of_the_wrong_shape():
    t = kc.Transport(*WIDE)
    needs = r"Transport needs matrices of shape \(3, 5\) \(len\(row_sums\), len\(col_sums\)\)"
    for shape in [(5, 3), (3, 4), (2, 5, 3), (15,), ()]:
        with pytest.raises(ValueError, match=rf"{needs}.*weight of shape {re.escape(str(shape))}"):
            t(tensor(np.ones(shape)))
