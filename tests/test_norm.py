"""norm.py: MaxNorm, UnitNorm, MinMaxNorm, and their parity with keras.constraints."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import max_norm_ref, min_max_ref, unit_ref


class TestNormProperties(PropertySuite):
    cases = [
        Case(kc.MaxNorm(), (6, 4), max_norm_ref(2.0, 0)),
        Case(kc.MaxNorm(0.5, axis=[0, 1, 2]), (3, 3, 2, 4), max_norm_ref(0.5, (0, 1, 2))),
        Case(kc.MaxNorm(1.0, axis=-1), (5, 3), max_norm_ref(1.0, -1)),
        Case(kc.MaxNorm(3.0, axis=None), (4, 4), max_norm_ref(3.0, None)),
        Case(kc.UnitNorm(), (6, 4), unit_ref(0), convex=False),
        Case(kc.UnitNorm(axis=(0, 1, 2)), (2, 2, 3, 5), unit_ref((0, 1, 2)), convex=False),
        # A shell min <= ||w|| <= max is not convex when min > 0.
        Case(kc.MinMaxNorm(0.5, 1.5), (6, 4), min_max_ref(0.5, 1.5, 0), convex=False),
        Case(kc.MinMaxNorm(0.0, 1.0, axis=1), (6, 4), min_max_ref(0.0, 1.0, 1), convex=True),
    ]


# ------------------------------------------------------------ Keras parity

DENSE, CONV = (16, 8), (3, 3, 4, 6)
PARITY = [
    (kc.MaxNorm(), keras.constraints.MaxNorm(), DENSE),
    # Keras's default axis 0 on a Conv kernel, chosen as [0]: ours warns on a bare 0.
    (kc.MaxNorm(axis=[0]), keras.constraints.MaxNorm(), CONV),
    (kc.MaxNorm(0.7, axis=[0, 1, 2]), keras.constraints.MaxNorm(0.7, axis=[0, 1, 2]), CONV),
    (kc.UnitNorm(), keras.constraints.UnitNorm(), DENSE),
    (kc.UnitNorm(axis=1), keras.constraints.UnitNorm(axis=1), DENSE),
    (kc.UnitNorm(axis=[0, 1, 2]), keras.constraints.UnitNorm(axis=[0, 1, 2]), CONV),
    (kc.MinMaxNorm(), keras.constraints.MinMaxNorm(), DENSE),
    (kc.MinMaxNorm(0.5, 2.0, 0.3, [0]), keras.constraints.MinMaxNorm(0.5, 2.0, rate=0.3), CONV),
    (kc.NonNeg(), keras.constraints.NonNeg(), DENSE),
]


@pytest.mark.parametrize("ours, theirs, shape", PARITY, ids=[f"{p[0]!r}-{p[2]}" for p in PARITY])
def test_keras_parity_float32(ours, theirs, shape):
    w = tensor(sample(shape, "normal", seed=11) * 1.5)
    np.testing.assert_allclose(to_np(ours(w)), to_np(theirs(w)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["max_norm", "min_max_norm", "unit_norm", "non_neg"])
def test_same_defaults_as_keras(name):
    ours, theirs = kc.get(name), keras.constraints.get(name)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == theirs.get_config()


def test_float16_norm_does_not_overflow():
    w = tensor([[300.0], [400.0]], "float16")
    np.testing.assert_array_equal(to_np(kc.MaxNorm(1000)(w)), [[300.0], [400.0]])
    np.testing.assert_allclose(to_np(kc.MaxNorm(1.0)(w)), [[0.6], [0.8]], atol=1e-3)
    np.testing.assert_allclose(to_np(kc.UnitNorm()(w)), [[0.6], [0.8]], atol=1e-3)
    # Keras computes the norm in float16, where 300**2 overflows to inf.
    assert np.all(to_np(keras.constraints.MaxNorm(1000)(w)) == 0)


@pytest.mark.parametrize("c", [kc.MaxNorm(), kc.UnitNorm(), kc.MinMaxNorm(0.5, 1.0)])
def test_all_zero_slice_stays_zero(c):
    w = np.ones((4, 3))
    w[:, 1] = 0
    out = to_np(c(tensor(w)))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:, 1], 0)


def test_max_norm_leaves_feasible_weight_bit_exact():
    w = sample((8, 4), "normal", seed=3) * 0.01
    out = to_np(kc.MaxNorm(2.0)(tensor(w)))
    np.testing.assert_array_equal(out, w.astype("float32"))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.MaxNorm(max_value=-1), "MaxNorm.*max_value.*-1"),
        (lambda: kc.MaxNorm(max_value="2"), "MaxNorm.*max_value"),
        (lambda: kc.MaxNorm(axis="0"), "MaxNorm.*axis"),
        (lambda: kc.MaxNorm(axis=[0, 0]), "MaxNorm.*axis"),
        (lambda: kc.MinMaxNorm(min_value=2, max_value=1), "MinMaxNorm.*min_value.*max_value"),
        (lambda: kc.MinMaxNorm(rate=0), "MinMaxNorm.*rate.*0"),
        (lambda: kc.MinMaxNorm(rate=1.5), "MinMaxNorm.*rate.*1.5"),
        (lambda: kc.MinMaxNorm(min_value=-1), "MinMaxNorm.*min_value"),
        (lambda: kc.UnitNorm(axis=None.__class__), "UnitNorm.*axis"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("axis", [2, -3, [0, 5]])
def test_axis_out_of_range_names_axis_and_shape(axis):
    with pytest.raises(ValueError, match=r"MaxNorm: `axis`=.*out of range.*\(4, 3\)"):
        kc.MaxNorm(axis=axis)(tensor(np.ones((4, 3))))


def test_integer_weight_is_a_type_error():
    with pytest.raises(TypeError, match="MaxNorm.*int32"):
        kc.MaxNorm()(ops.ones((3, 2), dtype="int32"))


@pytest.mark.parametrize("make", [kc.MaxNorm, kc.UnitNorm, kc.MinMaxNorm])
def test_axis_fan_in_takes_each_filter_of_a_kernel_of_any_rank(make):
    rng = np.random.default_rng(0)
    for shape in [(5, 3), (3, 4, 2), (3, 3, 4, 2), (2, 3, 3, 4, 2)]:
        w = rng.normal(size=shape) * 3
        got = to_np(make(axis="fan_in")(tensor(w)))
        expected = to_np(make(axis=list(range(len(shape) - 1)))(tensor(w)))
        np.testing.assert_array_equal(got, expected)
    assert make(axis="fan_in").get_config()["axis"] == "fan_in"


def test_axis_zero_on_a_conv_kernel_warns_and_names_the_fix():
    kernel = tensor(np.ones((3, 3, 4, 2)))
    with pytest.warns(UserWarning, match=r"axis=0 on a weight of shape \(3, 3, 4, 2\).*'fan_in'"):
        kc.MaxNorm(0.5)(kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kc.MaxNorm(0.5, axis=[0])(kernel)  # chosen: no warning
        kc.MaxNorm(0.5)(tensor(np.ones((4, 2))))  # a Dense kernel: no warning
    with pytest.raises(ValueError, match="'fan_in'"):
        kc.MaxNorm(0.5, axis="filters")
