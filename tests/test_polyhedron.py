"""polyhedron.py: Polyhedron against cvxpy's float64 QP solution, polished to float64 rounding."""

import dataclasses

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import polyhedron_ref

RNG = np.random.default_rng(7)
G4 = RNG.normal(size=(4, 6))  # four random rows on slices of 6
H4 = RNG.normal(size=4)
SUM6 = np.ones((1, 6))
G3 = RNG.normal(size=(3, 6))
BOX6 = np.vstack([np.eye(6), -np.eye(6)])  # -0.3 <= x <= 0.5
BOX_H = np.r_[np.full(6, 0.5), np.full(6, 0.3)]
A2 = RNG.normal(size=(2, 6))
B2 = RNG.normal(size=2)
G8 = RNG.normal(size=(5, 8))  # on each filter of a (2, 2, 2, 3) kernel
H8 = np.abs(RNG.normal(size=5))


def in_set(c):
    """`feasible(p, tol)`: every slice meets `A x = b` and `G x <= h` to `tol` of its size."""

    def feasible(p, tol):
        axes = tuple(np.atleast_1d(c.axis) % p.ndim)
        rest = [a for a in range(p.ndim) if a not in axes]
        rows = np.transpose(p, rest + list(axes)).reshape(
            -1, int(np.prod([p.shape[a] for a in axes]))
        )
        slack = tol * rows.shape[1] * np.maximum(1.0, np.abs(rows).max(axis=1, initial=0))
        ok = True
        if c.A is not None:
            ok &= np.all(np.abs(rows @ c.A.T - c.b) <= slack[:, None] * np.abs(c.A).sum(1))
        if c.G is not None:
            ok &= np.all(rows @ c.G.T - c.h <= slack[:, None] * np.abs(c.G).sum(1))
        return ok

    return feasible


def case(shape, axis, a=None, b=None, g=None, h=None, **options):
    c = kc.Polyhedron(a, b, g, h, axis=axis)
    return Case(c, shape, polyhedron_ref(a, b, g, h, axis), feasible=in_set(c), **options)


class TestPolyhedronProperties(PropertySuite):
    # The output is exact to about eps * |w| (it is w moved by multipliers of
    # that size); factor 256 covers the worst seen (about 30 eps). Inputs stop
    # at 1e3: past about 1e4 * |h| the set's features fall below float32's
    # eps * |w|, and `G x <= h` holds only to that (`feasible` scales by the
    # output, not by |w|; see the test at 1e7 below).
    cases = [
        case((6, 4), 0, g=G4, h=H4),  # inequalities only
        case((6, 4), 0, SUM6, 1.0, G3, [0.5, -0.2, 0.3]),  # the registry's example
        # torch.compile of each case's interior-point loop takes about a
        # minute (2-core CPU): the default torch run keeps the two above.
        case((4, 6), -1, g=BOX6, h=BOX_H, long_on=("torch",)),  # a box as G
        case(
            (6, 3), 0, SUM6, 1.0, BOX6, np.r_[np.full(6, 0.5), np.zeros(6)], long_on=("torch",)
        ),  # capped simplex
        case((6, 3), 0, A2, B2, long_on=("torch",)),  # equalities only
        case((2, 2, 2, 3), [0, 1, 2], g=G8, h=H8, long_on=("torch",)),
    ]
    cases = [dataclasses.replace(c, factor=256, exponents=(-30, 3)) for c in cases]


@pytest.mark.parametrize("dtype, exponent", [("float32", 7), ("float64", 15)])
def test_huge_inputs_are_projected_to_eps_of_their_size(dtype, exponent):
    c = kc.Polyhedron(G=BOX6, h=BOX_H, axis=-1)
    w = sample((4, 6), "normal", seed=8) * 10.0**exponent
    with float64_enabled():
        got = to_np(c(tensor(w, dtype)))
    size = 256 * np.finfo(dtype).eps * np.abs(w).max()
    np.testing.assert_allclose(got, np.clip(w, -0.3, 0.5), rtol=0, atol=size)


def test_a_slice_inside_is_kept_bit_for_bit():
    # The unconstrained minimum w is inside: every multiplier is 0.
    c = kc.Polyhedron(G=BOX6, h=BOX_H, axis=-1)
    w = tensor(sample((5, 6), "normal", seed=3) * 0.1)
    np.testing.assert_array_equal(to_np(c(w)), to_np(w))


@pytest.mark.parametrize(
    "a, b, g, h, w, want",
    [
        # x1 + x2 = 1, x1 >= 0: (-1, 3) goes to (0, 1) (the line's nearest point is (-1.5, 2.5)).
        ([[1.0, 1.0]], [1.0], [[-1.0, 0.0]], [0.0], [-1.0, 3.0], [0.0, 1.0]),
        # The box [0, 1]^2 alone: a clip.
        (None, None, [[1, 0], [0, 1], [-1, 0], [0, -1]], [1, 1, 0, 0], [2.0, -3.0], [1.0, 0.0]),
        # x1 <= x2 (monotone pair): the mean of a decreasing pair.
        (None, None, [[1.0, -1.0]], [0.0], [3.0, 1.0], [2.0, 2.0]),
        # A vertex: x1 + x2 <= 0, x1 - x2 <= 0, from (5, 0.5) to (0, 0).
        (None, None, [[1.0, 1.0], [1.0, -1.0]], [0.0, 0.0], [5.0, 0.5], [0.0, 0.0]),
    ],
)
def test_polyhedron_exact_answers(a, b, g, h, w, want):
    c = kc.Polyhedron(a, b, g, h, axis=-1)
    for dtype, atol in (("float32", 1e-6), ("float64", 1e-13)):
        with float64_enabled():
            got = to_np(c(tensor([w], dtype)))[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_the_equalities_hold_to_rounding_and_the_inequalities_as_computed():
    c = kc.Polyhedron(SUM6, 1.0, G3, [0.5, -0.2, 0.3])
    w = sample((6, 50), "normal", seed=4) * 10
    with float64_enabled():
        p = to_np(c(tensor(w, "float64")))
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=0, atol=1e-13)
    assert np.all(G3 @ p - np.array([[0.5], [-0.2], [0.3]]) <= 1e-13)


def test_violations_reports_the_residual_of_the_rows():
    c = kc.Polyhedron(SUM6, 1.0, G3, [0.5, -0.2, 0.3])
    w = sample((6, 4), "normal", seed=5)
    v = kc.Variable(w, constraint=c, project=False, name="kernel")
    rows = np.abs(w.sum(axis=0) - 1.0).max()
    worst = max(rows, (G3 @ w - np.array([[0.5], [-0.2], [0.3]])).max())
    assert kc.violations(v)["kernel"] == pytest.approx(worst, rel=1e-5)
    kc.project(v)
    assert kc.violations(v)["kernel"] <= 1e-5


def test_an_infeasible_system_is_a_clear_error_naming_the_numbers():
    # x1 <= 0 and -x1 <= -1 (x1 >= 1): the sum of the rows says 0 <= -1.
    with pytest.raises(
        ValueError,
        match=r"Polyhedron: no x satisfies A x = b and G x <= h: .*1 \* row 0, 1 \* row 1 "
        r"give 0 <= -1 for every x",
    ):
        kc.Polyhedron(G=[[1.0, 0.0], [-1.0, 0.0]], h=[0.0, -1.0])
    # On x1 + x2 = 2, x1 <= 0 and x2 <= 1 leave nothing.
    with pytest.raises(ValueError, match=r"give 2 <= 1 for every x with A x = b"):
        kc.Polyhedron([[1.0, 1.0]], [2.0], [[1.0, 0.0], [0.0, 1.0]], [0.0, 1.0])
    # A row constant on {A x = b}: x1 = 1, x2 = 2 leave x1 + x2 = 3 > 2.
    with pytest.raises(ValueError, match=r"row 0 of `G` is constant.*G\[0\] x = 3 > h\[0\] = 2"):
        kc.Polyhedron([[1.0, 0.0], [0.0, 1.0]], [1.0, 2.0], [[1.0, 1.0]], [2.0])
    # x1 + x2 = 1 and 2 x1 + 2 x2 = 1: at best x1 + x2 = 0.6, residual |(-0.4, 0.2)| = 0.447.
    with pytest.raises(ValueError, match=r"`A x = b` has no solution.*rank 1.*residual.*0\.447"):
        kc.Polyhedron([[1.0, 1.0], [2.0, 2.0]], [1.0, 1.0])


def test_dependent_equalities_and_rows_that_always_hold_are_accepted():
    c = kc.Polyhedron([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]], [1.0, 2.0], [[1.0, 1.0, 0.0]], [5.0])
    got = to_np(c(tensor([[3.0], [0.0], [4.0]])))
    np.testing.assert_allclose(got.ravel(), [2.0, -1.0, 4.0], atol=1e-6)


def test_the_matrices_are_checked_against_the_slice():
    with pytest.raises(
        ValueError,
        match=r"Polyhedron: `G` of shape \(4, 6\) does not fit.*shape \(5, 2\) has 5 entries, "
        r"`G` has 6 columns",
    ):
        kc.Polyhedron(G=G4, h=H4)(tensor(np.ones((5, 2))))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Polyhedron(), "Polyhedron: give at least one of `A` and `G`"),
        (lambda: kc.Polyhedron(b=[1.0]), "Polyhedron: `b` given without `A`"),
        (lambda: kc.Polyhedron([1.0, 2.0]), r"Polyhedron: `A` must be a finite array of shape"),
        (lambda: kc.Polyhedron([[1.0, np.inf]]), r"Polyhedron: `A` must be a finite array"),
        (lambda: kc.Polyhedron(G=[[np.nan, 1.0]]), r"Polyhedron: `G` must not contain NaN"),
        (lambda: kc.Polyhedron(G=G4, h=[1.0, 2.0]), r"`h` must be a finite number or 4 numbers"),
        (lambda: kc.Polyhedron(G=G4, h=np.inf), r"`h` must be a finite number or 4 numbers"),
        (
            lambda: kc.Polyhedron(SUM6, 1.0, np.ones((2, 5)), 0.0),
            r"`G` of shape \(2, 5\) must have as many columns as the other matrix, of shape \(1, 6\)",
        ),
        (lambda: kc.Polyhedron(G=G4, iterations=0), "Polyhedron: `iterations` must be an int >= 1"),
        (lambda: kc.Polyhedron(G=G4, axis=1.5), "Polyhedron: `axis`"),
    ],
)
def test_polyhedron_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_holds_the_arguments_and_loads_back():
    c = kc.Polyhedron(SUM6, 1.0, G3, [0.5, -0.2, 0.3], axis=0, iterations=12)
    config = c.get_config()
    assert sorted(config) == ["A", "G", "axis", "b", "h", "iterations"]
    clone = kc.Polyhedron.from_config(config)
    w = tensor(sample((6, 4), "normal", seed=6))
    np.testing.assert_array_equal(to_np(clone(w)), to_np(c(w)))
    assert (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(c)).iterations
        == 12
    )
