"""bounds.py: NonNeg, Clip."""

import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite

BOUNDS = np.linspace(-1.0, 0.5, 6).reshape(1, 6)


class TestBoundsProperties(PropertySuite):
    cases = [
        Case(kc.NonNeg(), (7, 5), lambda w: np.maximum(w, 0)),
        Case(kc.Clip(-0.01, 0.01), (4, 3, 2), lambda w: np.clip(w, -0.01, 0.01)),
        Case(kc.Clip(min_value=-2.0), (9,), lambda w: np.maximum(w, -2.0)),
        Case(kc.Clip(BOUNDS, BOUNDS + 1), (5, 6), lambda w: np.clip(w, BOUNDS, BOUNDS + 1)),
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


@pytest.mark.parametrize("constraint", [kc.NonNeg(), kc.Clip(-1, 1)], ids=repr)
def test_integer_weights_are_a_type_error(constraint):
    with pytest.raises(TypeError, match="int32"):
        constraint(ops.convert_to_tensor(np.arange(4, dtype="int32")))
