"""simplex.py: Simplex (plain, bounded, weighted), L1Ball and L1Sphere, against float64 NumPy and cvxpy."""

import dataclasses

import numpy as np
import pytest

import kconstraints as kc
from kconstraints._kernels import michelot_threshold, simplex_threshold
from tests.backend import float64_enabled, graph_breaks, jit
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import (
    bounded_simplex_ref,
    box_section_cvxpy,
    box_section_ref,
    box_section_vector,
    l1_ref,
    l1_sphere_brute_force,
    l1_sphere_ref,
    simplex_ref,
    simplex_vector,
)

# Weights of a box section: a slice of 6, one of (3, 3, 2) and one of 7 entries.
A6 = np.array([1.0, 0.5, 2.0, 1.5, 0.25, 1.0])
A332 = np.random.default_rng(7).uniform(0.5, 2.0, size=(3, 3, 2))
A7 = np.linspace(0.5, 2.0, 7)


def in_set(c):
    """`feasible(p, tol)` for the set of a Simplex or L1Ball: every slice's sum (norm) and bounds.

    Checked to `tol` of the set's own numbers, not of the input's magnitude:
    what the reference check alone let through at 1e9 (a slice of zeros).
    """

    def feasible(p, tol):
        axes = None if c.axis is None else tuple(np.atleast_1d(c.axis) % p.ndim)
        n = p.size if axes is None else int(np.prod([p.shape[a] for a in axes]))
        if isinstance(c, kc.L1Ball):
            return np.all(np.sum(np.abs(p), axis=axes) <= c.radius * (1 + n * tol))
        if isinstance(c, kc.L1Sphere):
            return np.allclose(np.sum(np.abs(p), axis=axes), c.radius, rtol=n * tol, atol=0)
        if c.weights is not None:  # <a, p> over each slice, `a` spread along the slice's axes
            every = tuple(range(p.ndim)) if axes is None else tuple(sorted(axes))
            a = c.weights.reshape([p.shape[i] if i in every else 1 for i in range(p.ndim)])
            sums = np.sum(a * p, axis=every)
            scale = max(1.0, abs(c.total), abs(c.min_value) * float(c.weights.sum()))
            ok = np.all(np.abs(sums - c.total) <= n * tol * scale * float(c.weights.max()))
        else:
            slack = n * tol * max(1.0, abs(c.total), abs(c.min_value))
            ok = np.all(np.abs(np.sum(p, axis=axes) - c.total) <= slack)
        ok = ok and np.all(p >= c.min_value - tol * max(1.0, abs(c.min_value)))
        high = c.max_value
        return ok and (high is None or np.all(p <= high + tol * max(1.0, abs(high))))

    return feasible


class TestSimplexL1Properties(PropertySuite):
    cases = [
        Case(kc.Simplex(), (6, 4), simplex_ref(1.0, 0)),
        Case(kc.Simplex(2.0, axis=[0, 1, 2]), (3, 3, 2, 4), simplex_ref(2.0, (0, 1, 2))),
        Case(kc.Simplex(0.5, axis=-1), (5, 7), simplex_ref(0.5, -1)),
        Case(kc.Simplex(axis=None), (4, 4), simplex_ref(1.0, None)),
        Case(kc.L1Ball(), (6, 4), l1_ref(1.0, 0)),
        Case(kc.L1Ball(0.5, axis=[0, 1, 2]), (3, 3, 2, 4), l1_ref(0.5, (0, 1, 2))),
        # Rows of 4 normal entries have L1 norms around 3: some inside, some out.
        Case(kc.L1Ball(3.0, axis=1), (8, 4), l1_ref(3.0, 1)),
        Case(kc.L1Ball(4.0, axis=None), (4, 4), l1_ref(4.0, None)),
        # The bounded simplex: a floor, a cap, both, and bounds that leave one point.
        Case(kc.Simplex(axis=0, min_value=0.05), (6, 4), bounded_simplex_ref(1.0, 0, 0.05)),
        Case(kc.Simplex(axis=-1, max_value=0.3), (5, 7), bounded_simplex_ref(1.0, -1, 0.0, 0.3)),
        Case(
            kc.Simplex(2.0, axis=[0, 1, 2], min_value=-0.1, max_value=0.2),
            (3, 3, 2, 4),
            bounded_simplex_ref(2.0, (0, 1, 2), -0.1, 0.2),
        ),
        Case(
            kc.Simplex(-1.0, axis=0, min_value=-1.0, max_value=0.5),
            (6, 4),
            bounded_simplex_ref(-1.0, 0, -1.0, 0.5),
        ),
        Case(kc.Simplex(axis=0, min_value=0.25), (4, 3), bounded_simplex_ref(1.0, 0, 0.25)),
        Case(kc.Simplex(axis=-1, max_value=0.25), (3, 4), bounded_simplex_ref(1.0, -1, 0.0, 0.25)),
        # The box section <a, w> = total: no cap, a floor and a cap, a filter's weights, a floor.
        Case(kc.Simplex(axis=0, weights=A6), (6, 4), box_section_ref(1.0, 0, A6)),
        Case(
            kc.Simplex(1.0, 0, -0.05, 0.4, weights=A6),
            (6, 4),
            box_section_ref(1.0, 0, A6, -0.05, 0.4),
        ),
        Case(
            kc.Simplex(2.0, axis=[0, 1, 2], max_value=0.3, weights=A332),
            (3, 3, 2, 4),
            box_section_ref(2.0, (0, 1, 2), A332, 0.0, 0.3),
        ),
        Case(
            kc.Simplex(axis=-1, min_value=0.05, weights=A7),
            (5, 7),
            box_section_ref(1.0, -1, A7, 0.05),
        ),
        # The L1 sphere: slices outside and inside the ball, a filter, the whole tensor, radius 0.
        Case(kc.L1Sphere(), (6, 4), l1_sphere_ref(1.0, 0)),
        Case(kc.L1Sphere(0.5, axis=[0, 1, 2]), (3, 3, 2, 4), l1_sphere_ref(0.5, (0, 1, 2))),
        Case(kc.L1Sphere(3.0, axis=1), (8, 4), l1_sphere_ref(3.0, 1)),
        Case(kc.L1Sphere(4.0, axis=None), (4, 4), l1_sphere_ref(4.0, None)),
        Case(kc.L1Sphere(0.0, axis=0), (5, 3), l1_sphere_ref(0.0, 0)),
    ]
    cases = [dataclasses.replace(case, feasible=in_set(case.constraint)) for case in cases]


@pytest.mark.parametrize(
    "constraint, w, want",
    [
        # Ties: the mass is shared equally, whatever order the sort leaves them in.
        (kc.Simplex(axis=-1), [[1.0, 1.0, 1.0, 1.0]], [[0.25, 0.25, 0.25, 0.25]]),
        (kc.Simplex(axis=-1), [[0.5, 0.5, -2.0, 0.5]], [[1 / 3, 1 / 3, 0.0, 1 / 3]]),
        (kc.Simplex(3.0, axis=-1), [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]),
        # Magnitudes of 1e6, exactly representable in float32: the answer is exact.
        (kc.Simplex(axis=-1), [[1e6, 1e6 - 0.5, 0.0]], [[0.75, 0.25, 0.0]]),
        (kc.Simplex(axis=-1), [[-1e6, 1e6, 1e6]], [[0.0, 0.5, 0.5]]),
        (kc.L1Ball(2.0, axis=-1), [[-1e6, 1e6, 0.0]], [[-1.0, 1.0, 0.0]]),
        (kc.L1Ball(1.0, axis=-1), [[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]),
        (kc.L1Ball(1.0, axis=-1), [[-3.0, 3.0, 3.0, 1.0]], [[-1 / 3, 1 / 3, 1 / 3, 0.0]]),
        (kc.L1Ball(0.0, axis=-1), [[-3.0, 2.0]], [[0.0, 0.0]]),
    ],
)
def test_simplex_and_l1_exact_answers(constraint, w, want):
    np.testing.assert_allclose(to_np(constraint(tensor(w))), want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_l1_ball_leaves_a_feasible_weight_bit_exact(dtype):
    w = sample((16, 5), "normal", seed=21)
    w = w / np.abs(w).sum(axis=0, keepdims=True) * np.linspace(0.1, 1.0, 5)  # L1 norms <= 1
    with float64_enabled():
        x = tensor(w, dtype)
        np.testing.assert_array_equal(to_np(kc.L1Ball(1.0)(x)), to_np(x))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Simplex(total=-1.0), "Simplex.*total.*-1"),
        (lambda: kc.Simplex(total=float("inf")), "Simplex.*total"),
        (lambda: kc.Simplex(axis=1.0), "Simplex.*axis"),
        (lambda: kc.L1Ball(radius=float("nan")), "L1Ball.*radius"),
        (lambda: kc.L1Ball(radius=[1.0]), "L1Ball.*radius"),
    ],
)
def test_simplex_and_l1_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("constraint", [kc.Simplex(axis=2), kc.L1Ball(axis=[0, 2])])
def test_simplex_and_l1_axis_out_of_range_names_the_shape(constraint):
    with pytest.raises(ValueError, match=r"out of range.*\(4, 3\)"):
        constraint(tensor(np.ones((4, 3))))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Simplex(min_value=0.5, max_value=0.2), r"Simplex.*min_value.*max_value"),
        (lambda: kc.Simplex(max_value=float("nan")), "Simplex.*max_value.*nan"),
        (lambda: kc.Simplex(min_value="0"), "Simplex.*min_value"),
        # Entries >= 0 can not sum to a negative total, whatever the slice length.
        (lambda: kc.Simplex(total=-0.5, max_value=1.0), "Simplex.*total.*-0.5"),
    ],
)
def test_bounded_simplex_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "constraint, match",
    [
        # Slices of 4 entries: 4 * 0.3 = 1.2 > 1 and 4 * 0.2 = 0.8 < 1.
        (
            kc.Simplex(axis=0, min_value=0.3),
            r"Simplex: no slice of 4 entries.*4 \* 0\.3 = 1\.2 > to",
        ),
        (
            kc.Simplex(axis=0, max_value=0.2),
            r"Simplex: no slice of 4 entries.*4 \* 0\.2 = 0\.8 < to",
        ),
        (kc.Simplex(-1.0, axis=0, min_value=-0.2), r"`total`=-1\.0: n \* min_value = 4 \* -0\.2"),
    ],
)
def test_bounded_simplex_with_an_empty_set_is_a_clear_error(constraint, match):
    with pytest.raises(ValueError, match=match):
        constraint(tensor(np.ones((4, 3))))


def test_bounds_that_hold_only_when_summed_in_exact_arithmetic_are_accepted():
    # 3 * 0.1 = 0.30000000000000004 > 0.3 in floats: still the single point 0.1.
    got = to_np(kc.Simplex(0.3, axis=-1, min_value=0.1)(tensor([[5.0, -1.0, 2.0]])))
    np.testing.assert_allclose(got, [[0.1, 0.1, 0.1]], rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "low, high", [(0.0, 0.3), (0.05, None), (-0.2, 0.4), (0.125, 0.125), (0.125, None)]
)
def test_bounded_simplex_solves_the_qp_that_cvxpy_solves(low, high):
    """An independent reference: cvxpy's QP solution of min ||z - v||^2 on the bounded simplex."""
    cp = pytest.importorskip("cvxpy", reason="cvxpy is the QP reference (dependency group test)")
    w = sample((8, 5), "normal", seed=31)
    got = to_np(kc.Simplex(1.0, axis=0, min_value=low, max_value=high)(tensor(w)))
    for j in range(w.shape[1]):
        z = cp.Variable(w.shape[0])
        bounds = [z >= low, cp.sum(z) == 1.0] + ([] if high is None else [z <= high])
        cp.Problem(cp.Minimize(cp.sum_squares(z - w[:, j])), bounds).solve()
        np.testing.assert_allclose(got[:, j], z.value, rtol=0, atol=1e-5)


def test_bounded_simplex_keeps_old_saved_configs():
    # A config written before the bounds existed loads as the plain simplex.
    c = kc.Simplex.from_config({"total": 2.0, "axis": 0})
    assert (c.min_value, c.max_value) == (0.0, None)
    w = sample((6, 4), "normal", seed=3)
    np.testing.assert_allclose(to_np(c(tensor(w))), simplex_ref(2.0, 0)(w), rtol=0, atol=1e-6)


# ------------------------------------------------------- the fast threshold


def adversarial(n, total, r=2, gap=1.0):
    """A slice on which each Michelot pass drops exactly one entry, so n - r + 1 passes.

    Entry m + 1 sits just below the shift computed from the top m, so the
    next shift drops it and keeps entry m; the gaps grow about m-fold each
    step, which float64 holds for n = 16 with `total` = 1e15.
    """
    u = [1.0] * r
    tau = (sum(u) - total) / r
    while len(u) < n:
        m = len(u)
        u.append(tau - gap)
        tau = (sum(u) - total) / len(u)
        gap *= 2 * (m + 2) * m / (m + 1)
    return np.array(u)


def test_the_sort_fallback_settles_slices_that_michelot_passes_do_not():
    total = 1e15
    slow = adversarial(16, total)
    easy = sample(16, "normal", seed=4) * 1e14
    w = np.stack([easy, slow[::-1], easy[::-1]], axis=1)  # the slow slice in the middle
    want = np.stack([simplex_vector(w[:, j], total) for j in range(3)], axis=1)
    with float64_enabled():
        rows = tensor(w.T, "float64")
        _, settled = michelot_threshold(rows, total)
        assert to_np(settled)[:, 0].tolist() == [True, False, True]
        c = kc.Simplex(total, axis=0)
        x = tensor(w, "float64")
        compiled = jit(lambda x: c(x))
        with graph_breaks() as breaks:
            got_jit = to_np(compiled(x))
        assert breaks[0] == 0
        for got in (to_np(c(x)), got_jit):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * total)


def l1_vector_ref(v, radius):
    return l1_ref(radius, -1)(v[None])[0]


ADVERSARIAL = {
    "all equal": np.full(64, 0.7),
    "one huge entry": np.concatenate([[1e6], sample(63, "normal", seed=5)]),
    "many ties at the threshold": np.repeat([3.0, 1.0, 1.0, 1.0, -2.0], 13),
    "zeros and ties": np.repeat([0.0, 0.5, 0.5, 0.0], 16),
    "length 1": np.array([-4.0]),
    "tiny spread": 1.0 + sample(64, "normal", seed=6) * 1e-6,
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_fast_threshold_is_exact_on_adversarial_slices(name, dtype):
    v = ADVERSARIAL[name]
    with float64_enabled():
        x = tensor(v[:, None], dtype)
        exact = tensor(v[:, None].astype(dtype).astype(np.float64), dtype)
        for total in (1.0, 0.5 * np.abs(v).sum()):
            want = simplex_vector(to_np(exact)[:, 0].astype(np.float64), total)
            got = to_np(kc.Simplex(total, axis=0)(x))[:, 0]
            rel = 1e-6 if dtype == "float64" else 1e-6 * len(v)
            np.testing.assert_allclose(got, want, rtol=0, atol=rel * max(np.abs(v).max(), 1))
            want = l1_vector_ref(to_np(exact)[:, 0].astype(np.float64), total)
            got = to_np(kc.L1Ball(total, axis=0)(x))[:, 0]
            np.testing.assert_allclose(got, want, rtol=0, atol=rel * max(np.abs(v).max(), 1))


@pytest.mark.parametrize("shape, axis", [((512, 6), 0), ((6, 512), -1)])
def test_fast_threshold_matches_the_sort_on_long_slices(shape, axis):
    """Long slices of three scales: on the fast path, within 1e-6 relative of float64."""
    with float64_enabled():
        for scale in (1e-2, 1.0, 1e3):
            w = sample(shape, "normal", seed=8) * scale
            rows = tensor(np.moveaxis(w, axis, -1), "float64")
            for v in (rows, tensor(np.abs(np.moveaxis(w, axis, -1)), "float64")):
                tau, settled = michelot_threshold(v, 1.0)
                assert to_np(settled).all()  # random slices never need the sort
                np.testing.assert_allclose(
                    to_np(tau), to_np(simplex_threshold(v, 1.0)), rtol=1e-12, atol=1e-12 * scale
                )
            for c, ref in (
                (kc.Simplex(1.0, axis=axis), simplex_ref(1.0, axis)),
                (kc.L1Ball(1.0, axis=axis), l1_ref(1.0, axis)),
            ):
                got = to_np(c(tensor(w, "float64")))
                np.testing.assert_allclose(got, ref(w), rtol=0, atol=1e-6 * scale)


# ------------------------------------------------------- large entries

# (constraint, cap of an entry); every slice sums to 1 (0.8), or has L1 norm 1.
MAGNITUDE_CASES = [
    (kc.Simplex(1.0, axis=-1), 1.0),
    (kc.Simplex(0.8, axis=-1), 0.8),
    (kc.Simplex(1.0, axis=-1, max_value=1.0), 1.0),
    # The cap binds: the free entries lie far below the capped top.
    (kc.Simplex(1.0, axis=-1, max_value=0.8), 0.8),
    (kc.L1Ball(1.0, axis=-1), None),
    (kc.L1Sphere(1.0, axis=-1), None),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("constraint, cap", MAGNITUDE_CASES, ids=lambda v: str(v))
def test_large_entries_still_give_a_point_of_the_set(constraint, cap, dtype):
    """Slices of 50 entries from 1 to finfo.max / 1000: the shift is taken relative to an entry.

    Relative to 0 it kept only its own rounding: at 1e9 in float32 every
    slice came out 0, at 1e16 in float64 off the set too.
    """
    rng = np.random.default_rng(41)
    base = np.concatenate([rng.normal(size=(4, 50)), rng.uniform(size=(4, 50))])
    scales = np.logspace(0, np.log10(np.finfo(dtype).max / 1000), 14)
    # One call for all scales: a large slice must not disturb a small one.
    w = (scales[:, None, None] * base).reshape(-1, 50)
    eps = float(np.finfo(dtype).eps)
    with float64_enabled():
        got = to_np(constraint(tensor(w, dtype)))
    assert np.isfinite(got).all()
    if cap is None:  # every slice lies outside the ball: its projection is on the sphere
        np.testing.assert_allclose(np.abs(got).sum(-1), 1.0, rtol=100 * eps, atol=0)
        return
    assert got.min() >= 0.0
    assert got.max() <= cap * (1 + 100 * eps)
    np.testing.assert_allclose(got.sum(-1), constraint.total, rtol=100 * eps, atol=0)


# ------------------------------------------------------- the box section


@pytest.mark.parametrize(
    "constraint, w, want",
    [
        # min ||z||^2 on <a, z> = 1: z = a / ||a||^2.
        (kc.Simplex(axis=-1, weights=[1.0, 2.0]), [[0.0, 0.0]], [[0.2, 0.4]]),
        # Equal weights 2: the plain simplex of total 1 / 2.
        (kc.Simplex(axis=-1, weights=[2.0, 2.0, 2.0]), [[1.0, 1.0, 1.0]], [[1 / 6, 1 / 6, 1 / 6]]),
        (kc.Simplex(axis=-1, weights=[2.0, 2.0, 2.0]), [[1.0, 0.0, -3.0]], [[0.5, 0.0, 0.0]]),
        # z = t * a: 6 t = 1 below the cap 0.4; with the cap 0.3, 0.3 * 2 + 2 t = 1.
        (
            kc.Simplex(1.0, -1, 0.0, 0.4, weights=[1.0, 1.0, 2.0]),
            [[0.0] * 3],
            [[1 / 6, 1 / 6, 1 / 3]],
        ),
        (kc.Simplex(1.0, -1, 0.0, 0.3, weights=[1.0, 1.0, 2.0]), [[0.0] * 3], [[0.2, 0.2, 0.3]]),
        # Tied entries: the heavier weight moves 4 times as far, (1 - t) + 4 (1 - 4 t) = 1.
        (kc.Simplex(axis=-1, weights=[1.0, 4.0]), [[1.0, 1.0]], [[13 / 17, 1 / 17]]),
        # The floor (0.25) or the cap leaves one point: <a, 0.25> = 1.
        (kc.Simplex(1.0, -1, 0.25, weights=[1.0, 3.0]), [[5.0, -2.0]], [[0.25, 0.25]]),
        (kc.Simplex(1.0, -1, 0.0, 0.25, weights=[1.0, 3.0]), [[5.0, -2.0]], [[0.25, 0.25]]),
        # Magnitudes of 1e6: the differences of the scores decide, exactly.
        (kc.Simplex(axis=-1, weights=[1.0, 2.0, 1.0]), [[1e6, 2e6, 0.0]], [[0.2, 0.4, 0.0]]),
    ],
)
def test_box_section_exact_answers(constraint, w, want):
    np.testing.assert_allclose(to_np(constraint(tensor(w))), want, rtol=0, atol=1e-7)


def test_box_section_of_unit_weights_is_the_plain_simplex():
    w = sample((7, 5), "normal", seed=51)
    for low, high in ((0.0, None), (-0.1, 0.4), (0.05, None)):
        plain = kc.Simplex(1.0, 0, low, high)
        weighted = kc.Simplex(1.0, 0, low, high, weights=np.ones(7))
        np.testing.assert_allclose(
            to_np(weighted(tensor(w))), to_np(plain(tensor(w))), rtol=0, atol=1e-6
        )


def test_box_section_without_weights_is_the_same_object_as_before():
    c = kc.Simplex(1.0, 0, 0.0, 0.5)
    assert c.weights is None and "weights" in c.get_config()
    assert kc.Simplex.from_config(c.get_config()).get_config() == c.get_config()


def test_box_section_weights_of_the_slice_shape_or_flat_agree():
    w = tensor(sample((3, 3, 2, 4), "normal", seed=52))
    shaped = kc.Simplex(2.0, [0, 1, 2], 0.0, 0.3, weights=A332)
    flat = kc.Simplex(2.0, [0, 1, 2], 0.0, 0.3, weights=A332.ravel())
    np.testing.assert_array_equal(to_np(shaped(w)), to_np(flat(w)))
    config = shaped.get_config()
    assert np.asarray(config["weights"]).shape == (3, 3, 2)  # stored as given, a list


@pytest.mark.parametrize(
    "low, high", [(0.0, None), (0.05, None), (-0.2, 0.4), (0.0, 0.3), (-1.0, 0.25)]
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_box_section_solves_the_qp_that_cvxpy_solves(low, high, dtype):
    """An independent reference: cvxpy's QP solution of min ||z - v||^2 on the box section."""
    pytest.importorskip("cvxpy", reason="cvxpy is the QP reference (dependency group test)")
    a = np.random.default_rng(53).uniform(0.2, 3.0, size=8)
    w = sample((8, 5), "normal", seed=54) * 2
    with float64_enabled():
        x = tensor(w, dtype)
        got = to_np(kc.Simplex(1.0, 0, low, high, weights=a)(x))
    v = to_np(x)
    for j in range(w.shape[1]):
        want = box_section_cvxpy(v[:, j], a, 1.0, low, high)
        np.testing.assert_allclose(got[:, j], want, rtol=0, atol=1e-5)
        exact = box_section_vector(v[:, j], a, 1.0, low, high)
        np.testing.assert_allclose(want, exact, rtol=0, atol=1e-6)  # the two references agree


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("high", [None, 1.0, 0.3])
def test_box_section_of_large_entries_is_a_point_of_the_set(high, dtype):
    """Slices of 50 entries from 1 to finfo.max / (4 n max(a) / min(a)), the docstring's bound."""
    rng = np.random.default_rng(55)
    a = rng.uniform(0.5, 2.0, size=50)
    base = np.concatenate([rng.normal(size=(4, 50)), rng.uniform(size=(4, 50))])
    top = np.finfo(dtype).max / (4 * 50 * a.max() / a.min())
    scales = np.logspace(0, np.log10(top), 14)
    w = (scales[:, None, None] * base).reshape(-1, 50)
    eps = float(np.finfo(dtype).eps)
    with float64_enabled():
        got = to_np(kc.Simplex(1.0, -1, 0.0, high, weights=a)(tensor(w, dtype)))
    assert np.isfinite(got).all()
    assert got.min() >= 0.0
    assert high is None or got.max() <= high * (1 + 100 * eps)
    np.testing.assert_allclose(got @ a, 1.0, rtol=100 * eps, atol=0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Simplex(weights=[1.0, -1.0]), r"Simplex.*weights.*> 0.*-1\.0 at index \(1,\)"),
        (lambda: kc.Simplex(weights=[[1.0, 0.0]]), r"Simplex.*weights.*0\.0 at index \(0, 1\)"),
        (lambda: kc.Simplex(weights=[1.0, float("inf")]), r"Simplex.*weights.*inf"),
        (lambda: kc.Simplex(weights=[1.0, float("nan")]), r"Simplex.*weights.*NaN"),
        (lambda: kc.Simplex(weights=2.0), r"Simplex.*weights.*an array.*2\.0"),
        (lambda: kc.Simplex(weights=[]), r"Simplex.*weights.*at least one entry"),
        (lambda: kc.Simplex(weights="ab"), r"Simplex.*weights.*real numbers"),
        # <a, min_value> = 6 * 0.5 = 3 > 1, <a, max_value> = 3 * 0.1 = 0.3 < 1.
        (
            lambda: kc.Simplex(min_value=0.5, weights=[1.0, 2.0, 3.0]),
            r"Simplex: no x .*sum\(weights\) \* min_value = 6\.0 \* 0\.5 = 3\.0 > total",
        ),
        (
            lambda: kc.Simplex(max_value=0.1, weights=[1.0, 2.0]),
            r"Simplex: no x .*`total`=1\.0: sum\(weights\) \* max_value = 3\.0 \* 0\.1",
        ),
    ],
)
def test_box_section_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_box_section_weights_that_do_not_fit_the_slice_name_both_shapes():
    c = kc.Simplex(weights=[1.0, 2.0, 3.0])
    with pytest.raises(
        ValueError, match=r"Simplex: `weights` of shape \(3,\).*\(4, 3\) has shape \(4,\)"
    ):
        c(tensor(np.ones((4, 3))))


# ------------------------------------------------------- the L1 sphere


@pytest.mark.parametrize(
    "constraint, w, want",
    [
        # The zero slice: sign +1, radius / n everywhere.
        (kc.L1Sphere(2.0, axis=-1), [[0.0, 0.0, 0.0, 0.0]], [[0.5, 0.5, 0.5, 0.5]]),
        # Outside the ball: the soft threshold (L1Ball).
        (kc.L1Sphere(1.0, axis=-1), [[3.0, -1.0]], [[1.0, 0.0]]),
        (kc.L1Sphere(1.0, axis=-1), [[-3.0, 3.0]], [[-0.5, 0.5]]),
        # Inside: every entry outward by (1 - 0.3) / 3, a zero towards +.
        (kc.L1Sphere(1.0, axis=-1), [[0.1, -0.2, 0.0]], [[0.1 + 0.7 / 3, -0.2 - 0.7 / 3, 0.7 / 3]]),
        (kc.L1Sphere(1.0, axis=-1), [[0.0, 0.0, 5.0]], [[0.0, 0.0, 1.0]]),
        # On the sphere: kept.
        (kc.L1Sphere(1.0, axis=-1), [[0.25, -0.75]], [[0.25, -0.75]]),
        (kc.L1Sphere(0.0, axis=-1), [[-3.0, 2.0]], [[0.0, 0.0]]),
        (kc.L1Sphere(2.0, axis=-1), [[-1e6, 1e6, 0.0]], [[-1.0, 1.0, 0.0]]),
    ],
)
def test_l1_sphere_exact_answers(constraint, w, want):
    got = to_np(constraint(tensor(w)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert not np.signbit(got[got == 0]).any()  # no -0.0 where the sign is +


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_l1_sphere_is_a_nearest_point_by_brute_force(dtype):
    """Over every face of the sphere (3^n sign patterns on supports): no point is nearer.

    The slices hold zeros, ties and norms inside and outside the ball; where
    zeros make the nearest point not unique, ours is one of the nearest.
    """
    rng = np.random.default_rng(56)
    # Slices of n entries as the columns of one weight: one call per length and radius.
    columns = {n: [rng.normal(size=n) * s for s in (0.1, 0.5, 3.0)] for n in (1, 3, 5)}
    columns[3].append(np.array([0.0, 0.3, 0.0]))
    columns[4] = [np.zeros(4), np.array([0.0, -2.0, 0.0, 0.1]), rng.normal(size=4)]
    columns[5].append(np.array([1.0, -1.0, 1.0, 0.0, 0.0]))
    atol = 1e-6 if dtype == "float32" else 1e-12
    spheres = [kc.L1Sphere(radius, axis=0) for radius in (0.5, 2.0)]
    with float64_enabled():
        for vs in columns.values():
            x = tensor(np.stack(vs, axis=1), dtype)
            rounded = to_np(x)
            for sphere in spheres:
                radius = sphere.radius
                got = to_np(sphere(x))
                for j in range(len(vs)):
                    best, points = l1_sphere_brute_force(rounded[:, j], radius)
                    np.testing.assert_allclose(np.abs(got[:, j]).sum(), radius, rtol=0, atol=atol)
                    distance = np.linalg.norm(got[:, j] - rounded[:, j])
                    np.testing.assert_allclose(distance, best, rtol=0, atol=atol)
                    assert min(np.abs(got[:, j] - p).max() for p in points) <= 10 * atol


def test_l1_sphere_of_a_slice_outside_the_ball_is_the_l1_ball_projection():
    w = tensor(sample((6, 4), "normal", seed=57) * 3)  # L1 norms around 14 > 1
    np.testing.assert_allclose(to_np(kc.L1Sphere()(w)), to_np(kc.L1Ball()(w)), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.L1Sphere(radius=-1.0), r"L1Sphere.*radius.*-1\.0"),
        (lambda: kc.L1Sphere(radius=float("nan")), "L1Sphere.*radius"),
        (lambda: kc.L1Sphere(radius=[1.0]), "L1Sphere.*radius"),
        (lambda: kc.L1Sphere(axis="0"), "L1Sphere.*axis"),
    ],
)
def test_l1_sphere_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
