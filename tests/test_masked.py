"""masked.py: Mask, Fixed, Partial."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite

MASK = sample((5, 4), "ties", seed=40) > 0  # booleans
MASK01 = MASK.astype(int)  # the same pattern as 0/1 numbers
UNIT_MASK = np.array([[1, 0, 1, 1]])  # one pattern per unit, broadcast over rows
VALUES = sample((5, 4), "normal", seed=41)
CONV_MASK = sample((3, 3, 2, 4), "ties", seed=42) >= 0


class TestMaskedProperties(PropertySuite):
    cases = [
        Case(kc.Mask(MASK), (5, 4), lambda w: np.where(MASK, w, 0.0)),
        Case(kc.Mask(UNIT_MASK), (5, 4), lambda w: w * UNIT_MASK),
        Case(kc.Fixed(MASK01, 0.5), (5, 4), lambda w: np.where(MASK, 0.5, w)),
        Case(kc.Fixed(MASK, VALUES), (5, 4), lambda w: np.where(MASK, VALUES, w)),
        Case(
            kc.Partial(kc.NonNeg(), MASK01), (5, 4), lambda w: np.where(MASK, np.maximum(w, 0), w)
        ),
        Case(
            kc.Partial(kc.Clip(-0.1, 0.1), CONV_MASK),
            (3, 3, 2, 4),
            lambda w: np.where(CONV_MASK, np.clip(w, -0.1, 0.1), w),
        ),
    ]


@pytest.mark.parametrize(
    "constraint, arg, shape",
    [
        (kc.Mask(np.ones(3)), "mask", r"\(3,\)"),
        (kc.Mask(np.ones((2, 4))), "mask", r"\(2, 4\)"),
        (kc.Fixed(np.ones((1, 2)), np.zeros((3, 1))), "values", r"\(3, 1\)"),
        (kc.Partial(kc.NonNeg(), np.ones((4, 3))), "mask", r"\(4, 3\)"),
    ],
)
def test_a_mask_or_values_that_do_not_fit_name_both_shapes(constraint, arg, shape):
    name = type(constraint).__name__
    with pytest.raises(ValueError, match=rf"{name}: `{arg}` of shape {shape}.*\(4, 2\)"):
        constraint(tensor(np.ones((4, 2))))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Mask([0.5, 1.0]), r"Mask: `mask` must hold only 0 and 1.*0\.5"),
        (lambda: kc.Mask([[1, 0], [1]]), "Mask: `mask` must be numeric"),
        (lambda: kc.Mask(["a"]), "Mask: `mask` must be real numbers"),
        (lambda: kc.Fixed([1, 0], values=[float("nan"), 0.0]), "Fixed: `values`.*NaN"),
        (lambda: kc.Fixed([1, 0, 1], values=[1.0, 2.0]), r"Fixed: `mask` of shape \(3,\).*\(2,\)"),
        (
            lambda: kc.Partial(kc.MaxNorm(), [1, 0]),
            r"Partial: `constraint` must be elementwise.*MaxNorm",
        ),
        (lambda: kc.Partial(kc.Simplex(), [1, 0]), r"Partial.*Simplex"),
        (lambda: kc.Partial(keras.constraints.NonNeg(), [1, 0]), r"Partial.*NonNeg"),
        (lambda: kc.Partial(kc.NonNeg(), [2, 0]), "Partial: `mask` must hold only 0 and 1"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_partial_accepts_a_name_and_nested_elementwise_constraints():
    assert isinstance(kc.Partial("non_neg", [1, 0]).constraint, kc.NonNeg)
    inner = kc.Partial(kc.Clip(-1.0, 1.0), [1, 1])
    outer = kc.Partial(inner, [1, 0])
    got = to_np(outer(tensor([5.0, 5.0])))
    np.testing.assert_array_equal(got, [1.0, 5.0])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_masked_entries_are_exactly_zero_and_fixed_entries_exactly_their_value(dtype):
    w = tensor(sample((5, 4), "normal", seed=43) * 100, dtype)
    assert np.all(to_np(kc.Mask(MASK)(w))[~MASK] == 0)
    fixed = to_np(kc.Fixed(MASK, 0.25)(w))
    assert np.all(fixed[MASK] == 0.25)
    np.testing.assert_array_equal(fixed[~MASK], to_np(w)[~MASK])
