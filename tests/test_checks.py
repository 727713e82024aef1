"""_checks.py: every argument check, its normalized value and its one wording per kind of error."""

import math

import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from kconstraints import _checks
from kconstraints.callbacks import ConstraintMonitor
from tests.helpers import tensor

OWNER = "Owner"

# ------------------------------------------------------------ accepted values

ACCEPTED = [
    # (check, args after owner, keywords, the normalized value)
    ("check_number", ("x", 2), {}, 2.0),
    ("check_number", ("x", np.float32(0.5)), {}, 0.5),
    ("check_number", ("x", 0), {"low": 0}, 0.0),
    ("check_number", ("x", 1), {"low": 0, "high": 1, "low_open": True}, 1.0),
    ("check_int", ("n", 3), {}, 3),
    ("check_int", ("n", np.int64(0)), {"low": 0}, 0),
    ("check_bool", ("flag", True), {}, True),
    ("check_bool", ("flag", False), {}, False),
    ("check_choice", ("method", "gram", ("svd", "gram")), {}, "gram"),
    ("check_text", ("name", "worst"), {}, "worst"),
    ("check_array", ("bound", 3), {}, 3.0),
    ("check_array", ("bound", -np.inf), {}, -math.inf),
    ("check_axis", ("axis", None), {}, None),
    ("check_axis", ("axis", np.int64(-1)), {}, -1),
    ("check_axis", ("axis", (0, 1, 2)), {}, [0, 1, 2]),
    ("check_axis", ("axis", [2, -1]), {}, [2, -1]),
    ("check_one_axis", ("axis", np.int32(1)), {}, 1),
]


@pytest.mark.parametrize(
    "check, args, kwargs, want", ACCEPTED, ids=[f"{a[0]}-{a[1][1]!r}" for a in ACCEPTED]
)
def test_an_accepted_value_comes_back_normalized(check, args, kwargs, want):
    got = getattr(_checks, check)(OWNER, *args, **kwargs)
    assert got == want
    assert type(got) is type(want)


def test_arrays_come_back_as_float64_and_boolean_masks_stay_boolean():
    bound = _checks.check_array(OWNER, "bound", [[1, 2]])
    assert bound.dtype == np.float64 and bound.tolist() == [[1.0, 2.0]]
    mask = _checks.check_mask(OWNER, "mask", [True, False])
    assert mask.dtype == bool and mask.tolist() == [True, False]
    numbers = _checks.check_mask(OWNER, "mask", [1, 0])
    assert numbers.dtype == np.float64 and numbers.tolist() == [1.0, 0.0]


def test_constraints_are_resolved_from_names_configs_and_instances():
    assert isinstance(_checks.check_constraint(OWNER, "constraint", "non_neg"), kc.NonNeg)
    max_norm = kc.MaxNorm(2.0)
    config = {"class_name": "Clip", "config": {"min_value": 0.0}}
    got = _checks.check_constraints(OWNER, "constraints", [max_norm, "unit_norm", config])
    assert got[0] is max_norm
    assert [type(c) for c in got] == [kc.MaxNorm, kc.UnitNorm, kc.Clip]


@pytest.mark.parametrize(
    "axis, shape, want",
    [
        (None, (4, 3), (0, 1)),
        (-1, (4, 3), (1,)),
        ([2, 0], (3, 3, 2, 4), (0, 2)),
        ([-1, 0], (4, 3), (0, 1)),
    ],
)
def test_resolve_axis_gives_sorted_non_negative_axes(axis, shape, want):
    assert _checks.resolve_axis(OWNER, "axis", axis, shape) == want


@pytest.mark.parametrize(
    "array_shape, shape",
    [((), (4, 2)), ((2,), (4, 2)), ((1, 2), (4, 2)), ((4, 1), (4, 2)), ((4, 2), (4, 2))],
    ids=str,
)
def test_an_array_that_broadcasts_to_the_weight_fits(array_shape, shape):
    _checks.check_fits(OWNER, "mask", array_shape, shape)
    _checks.check_broadcast(OWNER, "mask", array_shape, "values", shape)


def test_weight_checks_accept_what_they_constrain():
    assert _checks.check_float_weight(OWNER, "float16") == "float16"
    _checks.check_matrix(OWNER, (3, 3, 2, 4))
    _checks.check_square(OWNER, (2, 5, 5))
    _checks.check_ordered(OWNER, "low", [0.0, -1.0], "high", 0.0)


# ---------------------------------------------------------- rejected values

NAN = float("nan")

REJECTED = [
    # (kind of mistake, check, args after owner, keywords, how the message shows the value)
    ("bad bool", "check_bool", ("flag", 1), {}, "1"),
    ("bad bool", "check_bool", ("flag", "yes"), {}, "'yes'"),
    ("bad bool", "check_bool", ("flag", None), {}, "None"),
    ("int below low", "check_int", ("n", 0), {}, "0"),
    ("int below low", "check_int", ("n", -1), {"low": 0}, "-1"),
    ("int below low", "check_int", ("n", 2), {"low": 3}, "2"),
    ("non-int", "check_int", ("n", 2.5), {}, "2.5"),
    ("non-int", "check_int", ("n", "3"), {}, "'3'"),
    ("non-int", "check_int", ("n", True), {}, "True"),
    ("non-int", "check_int", ("n", None), {}, "None"),
    ("non-int", "check_one_axis", ("axis", 0.5), {}, "0.5"),
    ("non-int", "check_one_axis", ("axis", [0, 1]), {}, "[0, 1]"),
    ("non-int", "check_one_axis", ("axis", None), {}, "None"),
    ("non-int", "check_axis", ("axis", 1.5), {}, "1.5"),
    ("non-int", "check_axis", ("axis", "0"), {}, "'0'"),
    ("non-int", "check_axis", ("axis", []), {}, "[]"),
    ("non-int", "check_axis", ("axis", [0, True]), {}, "[0, True]"),
    ("not a number", "check_number", ("x", "2"), {}, "'2'"),
    ("not a number", "check_number", ("x", True), {}, "True"),
    ("not a number", "check_number", ("x", [1.0]), {}, "[1.0]"),
    ("NaN", "check_number", ("x", NAN), {}, "nan"),
    ("NaN", "check_array", ("bound", [0.0, NAN]), {}, "[0.0, nan]"),
    ("out of range", "check_number", ("x", -1), {"low": 0}, "-1"),
    ("out of range", "check_number", ("x", 0), {"low": 0, "low_open": True}, "0"),
    ("out of range", "check_number", ("x", 1.5), {"high": 1}, "1.5"),
    ("out of range", "check_number", ("x", math.inf), {}, "inf"),
    ("out of range", "check_choice", ("method", "qr", ("svd", "gram")), {}, "'qr'"),
    ("out of range", "check_mask", ("mask", [0.5, 1.0, 2.0]), {}, "[0.5, 2.0]"),
    ("repeated axis", "check_axis", ("axis", [0, 0]), {}, "[0, 0]"),
    ("repeated axis", "check_axis", ("axis", (1, 1)), {}, "(1, 1)"),
    ("empty", "check_text", ("name", ""), {}, "''"),
    ("empty", "check_text", ("name", 3), {}, "3"),
    ("empty", "check_constraints", ("constraints", []), {}, "[]"),
    ("not an array", "check_array", ("bound", [[1, 2], [3]]), {}, "[[1, 2], [3]]"),
    ("not an array", "check_array", ("bound", ["a"]), {}, "['a']"),
    ("not an array", "check_array", ("bound", [1j]), {}, "[1j]"),
    ("unknown constraint", "check_constraint", ("constraint", "no_such"), {}, "no_such"),
]


@pytest.mark.parametrize(
    "check, args, kwargs, shown",
    [r[1:] for r in REJECTED],
    ids=[f"{r[0]}-{r[1]}-{r[2][1]!r}" for r in REJECTED],
)
def test_an_error_names_the_owner_the_argument_and_the_value(check, args, kwargs, shown):
    with pytest.raises(ValueError) as err:
        getattr(_checks, check)(OWNER, *args, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{OWNER}: `{args[0]}`"), message
    assert shown in message, message


def test_a_member_of_a_list_is_named_by_its_index():
    with pytest.raises(ValueError, match=r"^Owner: `constraints\[1\]`.*no_such"):
        _checks.check_constraints(OWNER, "constraints", ["non_neg", "no_such"])


@pytest.mark.parametrize("value", [-np.inf, np.inf])
def test_infinite_numbers_are_out_of_range_but_infinite_bounds_are_arrays(value):
    with pytest.raises(ValueError, match=rf"Owner: `x` must be finite.*got {value!r}"):
        _checks.check_number(OWNER, "x", value)
    assert _checks.check_array(OWNER, "bound", value) == value


SHAPE_ERRORS = [
    # (check, args after owner, what the message must show)
    ("check_fits", ("mask", (3,), (4, 2)), ["`mask`", "(3,)", "(4, 2)"]),
    ("check_fits", ("values", (2, 4), (4,)), ["`values`", "(2, 4)", "(4,)"]),  # would grow
    ("check_fits", ("mask", (8, 2), (4, 2)), ["`mask`", "(8, 2)", "(4, 2)"]),
    ("check_broadcast", ("mask", (3,), "values", (2,)), ["`mask`", "(3,)", "`values`", "(2,)"]),
    ("check_ordered", ("low", [0.0, 2.0], "high", 1.0), ["`low`", "`high`", "[0.0, 2.0]"]),
    ("check_ordered", ("low", [0.0, 0.0], "high", [1.0] * 3), ["`low`", "(2,)", "(3,)"]),
    ("resolve_axis", ("axis", 2, (4, 3)), ["`axis`=2", "(4, 3)"]),
    ("resolve_axis", ("axis", [0, -3], (4, 3)), ["`axis`=[0, -3]", "(4, 3)"]),
    ("resolve_axis", ("axis", [0, -2], (4, 3)), ["`axis`=[0, -2]", "twice", "(4, 3)"]),
    ("check_matrix", ((5,),), ["(5,)"]),
    ("check_square", ((4, 3),), ["square", "(4, 3)"]),
    ("check_square", ((2, 3, 5),), ["square", "(2, 3, 5)"]),
]


@pytest.mark.parametrize(
    "check, args, shown", SHAPE_ERRORS, ids=[f"{s[0]}-{s[1]}" for s in SHAPE_ERRORS]
)
def test_a_shape_that_does_not_fit_names_the_owner_and_both_shapes(check, args, shown):
    with pytest.raises(ValueError) as err:
        getattr(_checks, check)(OWNER, *args)
    message = str(err.value)
    assert message.startswith(OWNER), message
    for text in shown:
        assert text in message, (text, message)


@pytest.mark.parametrize("dtype", ["int32", "bool", "uint8"])
def test_a_weight_that_is_not_floating_point_is_a_type_error(dtype):
    with pytest.raises(TypeError, match=rf"^Owner constrains floating-point .*{dtype}"):
        _checks.check_float_weight(OWNER, dtype)


# ------------------------------------------- the classes use these wordings


def _message(fn):
    with pytest.raises((ValueError, TypeError)) as err:
        fn()
    return f"{type(err.value).__name__}: {err.value}"


ONE_WORDING = {
    # What a user writes, and the same mistake put to the check directly.
    "Orthogonal-iterations": (
        lambda: kc.Orthogonal(iterations=0),
        lambda: _checks.check_int("Orthogonal", "iterations", 0),
    ),
    "Intersection-iterations": (
        lambda: kc.Intersection([kc.NonNeg()], iterations=0),
        lambda: _checks.check_int("Intersection", "iterations", 0),
    ),
    "LowRank-rank": (
        lambda: kc.LowRank(rank=2.5),
        lambda: _checks.check_int("LowRank", "rank", 2.5),
    ),
    "SpectralNorm-iterations": (
        lambda: kc.SpectralNorm(iterations=True),
        lambda: _checks.check_int("SpectralNorm", "iterations", True, low=0),
    ),
    "SpectralNorm-batched": (
        lambda: kc.SpectralNorm(batched=1),
        lambda: _checks.check_bool("SpectralNorm", "batched", 1),
    ),
    "Monotonic-increasing": (
        lambda: kc.Monotonic(increasing="yes"),
        lambda: _checks.check_bool("Monotonic", "increasing", "yes"),
    ),
    "ConstraintMonitor-per_variable": (
        lambda: ConstraintMonitor(per_variable=0),
        lambda: _checks.check_bool("ConstraintMonitor", "per_variable", 0),
    ),
    "MaxNorm-axis": (
        lambda: kc.MaxNorm(axis=[0, 0]),
        lambda: _checks.check_axis("MaxNorm", "axis", [0, 0]),
    ),
    "Monotonic-axis": (
        lambda: kc.Monotonic(axis=None),
        lambda: _checks.check_one_axis("Monotonic", "axis", None),
    ),
    "MaxNorm-max_value": (
        lambda: kc.MaxNorm(max_value=-1),
        lambda: _checks.check_number("MaxNorm", "max_value", -1, low=0),
    ),
    "L1Ball-radius": (
        lambda: kc.L1Ball(radius=NAN),
        lambda: _checks.check_number("L1Ball", "radius", NAN, low=0),
    ),
    "Orthogonal-method": (
        lambda: kc.Orthogonal(method="qr"),
        lambda: _checks.check_choice("Orthogonal", "method", "qr", ("svd", "newton_schulz")),
    ),
    "Mask-mask": (
        lambda: kc.Mask([0.5, 1.0]),
        lambda: _checks.check_mask("Mask", "mask", [0.5, 1.0]),
    ),
    "Fixed-values": (
        lambda: kc.Fixed([1, 0], values=[NAN, 0.0]),
        lambda: _checks.check_array("Fixed", "values", [NAN, 0.0]),
    ),
    "MaxNorm-axis-range": (
        lambda: kc.MaxNorm(axis=2)(tensor(np.ones((4, 3)))),
        lambda: _checks.resolve_axis("MaxNorm", "axis", 2, (4, 3)),
    ),
    "Mask-fits": (
        lambda: kc.Mask(np.ones(3))(tensor(np.ones((4, 2)))),
        lambda: _checks.check_fits("Mask", "mask", (3,), (4, 2)),
    ),
    "Clip-fits": (
        lambda: kc.Clip(np.zeros(3), 1.0)(tensor(np.ones((4, 2)))),
        lambda: _checks.check_fits("Clip", "min_value", (3,), (4, 2)),
    ),
    "PSD-square": (
        lambda: kc.PSD()(tensor(np.ones((4, 3)))),
        lambda: _checks.check_square("PSD", (4, 3)),
    ),
    "Orthogonal-matrix": (
        lambda: kc.Orthogonal()(tensor(np.ones(5))),
        lambda: _checks.check_matrix("Orthogonal", (5,)),
    ),
    "NonNeg-dtype": (
        lambda: kc.NonNeg()(ops.convert_to_tensor(np.arange(4, dtype="int32"))),
        lambda: _checks.check_float_weight("NonNeg", "int32"),
    ),
}


@pytest.mark.parametrize("make, check", ONE_WORDING.values(), ids=ONE_WORDING)
def test_a_class_raises_the_checks_own_wording(make, check):
    want = _message(check)
    assert _message(make) == want
