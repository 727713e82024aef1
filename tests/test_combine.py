"""combine.py: Compose and Intersection (Dykstra's algorithm)."""

import itertools
import json

import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import box_and_mean_ref, monotonic_ref, nonneg_then_max_norm, simplex_ref

MASK = sample((6, 4), "ties", seed=60) >= 0


class TestCombineProperties(PropertySuite):
    cases = [
        # A Compose is not convex in general (the registry's `convex`); these
        # three are the projection onto the intersection of their convex sets.
        Case(
            kc.Compose([kc.NonNeg(), kc.MaxNorm(1.0)]),
            (6, 4),
            nonneg_then_max_norm(1.0, 0),
            convex=True,
        ),
        Case(
            kc.Compose([kc.Mask(MASK), kc.MaxNorm(2.0, axis=None)]),
            (6, 4),
            lambda w: nonneg_then_max_norm(2.0, None)(np.abs(w) * MASK) * np.sign(w),
            convex=True,
        ),
        # Bounded isotonic regression is the clipped isotonic regression.
        Case(
            kc.Compose([kc.Monotonic(), kc.Clip(0.0, 1.0)]),
            (8, 3),
            lambda w: np.clip(monotonic_ref(0)(w), 0.0, 1.0),
            convex=True,
        ),
        Case(
            kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], iterations=2),
            (6, 4),
            nonneg_then_max_norm(1.0, 0),
        ),
        Case(
            kc.Intersection([kc.Clip(-1.0, 1.0), kc.Mask(MASK)], iterations=1),
            (6, 4),
            lambda w: np.clip(w, -1.0, 1.0) * MASK,
        ),
    ]


# The error of Dykstra's algorithm against an exact projection, as the sweeps grow.
CONVERGENCE = [
    # Non-negative and summing to 1 is the simplex, which Simplex projects onto exactly.
    ("simplex", kc.NonNeg(), kc.CenterAround(1.0 / 8, axis=0), simplex_ref(1.0, 0)),
    ("box-mean", kc.Clip(-0.5, 0.5), kc.CenterAround(0.2), box_and_mean_ref(-0.5, 0.5, 0.2)),
    # The ball first: the first sweep is not exact, the limit is.
    ("ball-cone", kc.MaxNorm(1.0), kc.NonNeg(), nonneg_then_max_norm(1.0, 0)),
]
SWEEPS = (1, 4, 16, 64, 256)


@pytest.mark.parametrize(
    "first, second, exact", [c[1:] for c in CONVERGENCE], ids=[c[0] for c in CONVERGENCE]
)
def test_dykstra_error_falls_to_the_exact_projection(first, second, exact):
    w = sample((8, 5), "normal", seed=61) * 2
    want = exact(w)
    with float64_enabled():
        x = tensor(w, "float64")
        errors = [
            np.abs(to_np(kc.Intersection([first, second], k)(x)) - want).max() for k in SWEEPS
        ]
    assert errors[0] > 1e-2, f"the first sweep is already exact, nothing is measured: {errors}"
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] <= 1e-9, errors


def test_dykstra_is_exact_after_one_sweep_for_a_cone_then_a_ball():
    w = sample((8, 5), "normal", seed=62) * 2
    with float64_enabled():
        got = to_np(kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], 1)(tensor(w, "float64")))
    np.testing.assert_allclose(got, nonneg_then_max_norm(1.0, 0)(w), rtol=0, atol=1e-14)


def test_a_point_of_the_intersection_is_returned_unchanged():
    z = simplex_ref(1.0, 0)(sample((8, 5), "normal", seed=63))
    c = kc.Intersection([kc.NonNeg(), kc.CenterAround(1.0 / 8, axis=0)], 3)
    with float64_enabled():
        np.testing.assert_allclose(to_np(c(tensor(z, "float64"))), z, rtol=0, atol=1e-15)


def test_nested_constraints_round_trip_through_json():
    c = kc.Compose(
        [
            kc.Partial(kc.Compose([kc.NonNeg(), kc.Clip(max_value=0.5)]), MASK),
            kc.Intersection([kc.Monotonic(), kc.L1Ball(2.0)], iterations=7),
        ]
    )
    clone = kc.deserialize(json.loads(json.dumps(kc.serialize(c))))
    assert clone.get_config() == c.get_config()
    assert clone.constraints[1].iterations == 7
    w = tensor(sample((6, 4), "normal", seed=64))
    np.testing.assert_array_equal(to_np(clone(w)), to_np(c(w)))


def test_elementwise_only_when_every_member_is():
    assert kc.Compose([kc.NonNeg(), kc.Clip(-1, 1)]).elementwise
    assert kc.Intersection([kc.NonNeg(), kc.Mask([1, 0])]).elementwise
    assert not kc.Compose([kc.NonNeg(), kc.MaxNorm()]).elementwise
    with pytest.raises(ValueError, match="Partial.*Intersection"):
        kc.Partial(kc.Intersection([kc.NonNeg(), kc.MaxNorm()]), [1, 0])


def test_partial_takes_an_elementwise_compose_and_projects_only_the_masked_entries():
    partial = kc.Partial(kc.Compose([kc.NonNeg(), kc.Clip(-1, 1)]), [1, 0])
    w = [[-2.0, -2.0], [3.0, 3.0], [0.5, -0.5]]
    # Column 0 (mask 1) onto [0, 1]; column 1 (mask 0) unchanged.
    want = [[0.0, -2.0], [1.0, 3.0], [0.5, -0.5]]
    np.testing.assert_array_equal(to_np(partial(tensor(w))), want)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Compose([]), "Compose: `constraints` must be a non-empty list"),
        (lambda: kc.Compose(kc.NonNeg()), "Compose: `constraints` must be a non-empty list"),
        (lambda: kc.Intersection(["no_such"]), "no_such"),
        (lambda: kc.Intersection([kc.NonNeg()], iterations=0), "Intersection: `iterations`.*0"),
        (lambda: kc.Intersection([kc.NonNeg()], iterations=2.5), "Intersection: `iterations`"),
        (lambda: kc.Intersection([kc.NonNeg()], iterations=True), "Intersection: `iterations`"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()
