"""value.py: NonNeg, Clip, CenterAround."""

import numpy as np
import pytest

import kconstraints as kc
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite

BOUNDS = np.linspace(-1.0, 0.5, 6).reshape(1, 6)


def center_ref(ref_value, axis):
    return lambda w: w - w.mean(axis=axis, keepdims=True) + ref_value


class TestValueProperties(PropertySuite):
    cases = [
        Case(kc.NonNeg(), (7, 5), lambda w: np.maximum(w, 0)),
        Case(kc.Clip(-0.01, 0.01), (4, 3, 2), lambda w: np.clip(w, -0.01, 0.01)),
        Case(kc.Clip(min_value=-2.0), (9,), lambda w: np.maximum(w, -2.0)),
        Case(kc.Clip(BOUNDS, BOUNDS + 1), (5, 6), lambda w: np.clip(w, BOUNDS, BOUNDS + 1)),
        Case(kc.CenterAround(), (6, 4), center_ref(0.0, None)),
        Case(kc.CenterAround(0.5, axis=0), (6, 4), center_ref(0.5, 0)),
        Case(kc.CenterAround(-1.0, axis=[0, -2]), (3, 4, 2), center_ref(-1.0, (0, 1))),
    ]


def test_wgan_clip_keeps_every_entry_in_range():
    w = sample((64, 32), "normal") * 10
    out = to_np(kc.Clip(-0.01, 0.01)(tensor(w)))
    assert out.min() >= np.float32(-0.01) and out.max() <= np.float32(0.01)
    inside = np.abs(w) < 0.01
    np.testing.assert_allclose(out[inside], w[inside], atol=1e-8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_value": 1, "max_value": -1}, "min_value"),
        ({"min_value": "a", "max_value": 1}, "min_value"),
        ({"min_value": None, "max_value": None}, "at least one"),
        ({"min_value": [0.0, 2.0], "max_value": [1.0, 1.0]}, "min_value"),
        ({"min_value": [0.0, 0.0], "max_value": [1.0, 1.0, 1.0]}, "broadcast"),
        ({"min_value": float("nan"), "max_value": 1.0}, "NaN"),
    ],
)
def test_clip_rejects_bad_bounds(kwargs, match):
    with pytest.raises(ValueError, match=f"Clip.*{match}"):
        kc.Clip(**kwargs)


def test_clip_bound_that_does_not_fit_the_weight_names_both_shapes():
    c = kc.Clip(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"\(3,\).*\(4, 2\)"):
        c(tensor(np.ones((4, 2))))


def test_center_around_rejects_bad_arguments():
    with pytest.raises(ValueError, match="CenterAround.*ref_value"):
        kc.CenterAround(ref_value="zero")
    with pytest.raises(ValueError, match="CenterAround.*axis"):
        kc.CenterAround(axis=1.5)


def test_center_around_axis_out_of_range_names_axis_and_shape():
    with pytest.raises(ValueError, match=r"axis.*3.*\(4, 2\)"):
        kc.CenterAround(axis=3)(tensor(np.ones((4, 2))))


@pytest.mark.parametrize("constraint", [kc.NonNeg(), kc.Clip(-1, 1), kc.CenterAround()])
def test_integer_weights_are_a_type_error(constraint):
    from keras import ops

    with pytest.raises(TypeError, match="int32"):
        constraint(ops.convert_to_tensor(np.arange(4, dtype="int32")))
