"""The rounding constants of `kconstraints/_constants.py` mean what their names say."""

import numpy as np

from kconstraints import _constants


def test_machine_epsilon_and_unit_roundoff_are_numpys():
    for dtype in ("float32", "float64"):
        eps = float(np.finfo(dtype).eps)
        assert _constants.MACHINE_EPSILON[dtype] == eps
        assert _constants.UNIT_ROUNDOFF[dtype] == eps / 2
        one = np.array(1, dtype)
        # 1 + u rounds back to 1 (ties to even); 1 + eps is the next float.
        assert one + np.array(_constants.UNIT_ROUNDOFF[dtype], dtype) == one
        assert one + np.array(eps, dtype) == np.nextafter(one, np.array(2, dtype))


def test_the_sum_margin_covers_a_float32_sum():
    """A float32 sum of n positive terms is within n * margin of the exact sum."""
    rng = np.random.default_rng(0)
    terms = rng.random(4096).astype("float32")
    exact = float(np.sum(terms.astype("float64")))
    running = np.float32(0)
    for t in terms:  # one rounding per addition: the worst order for the error bound
        running = np.float32(running + t)
    assert abs(float(running) - exact) <= len(terms) * _constants.SUM_MARGIN_PER_TERM * exact


def test_float64_slacks_are_above_float64_rounding_and_below_float32s():
    for name in ("FLOAT64_NORM_MARGIN", "FLOAT64_RESIDUAL_SLACK", "FLOAT64_PRODUCT_SLACK"):
        value = getattr(_constants, name)
        assert 1e3 * np.finfo("float64").eps < value < np.finfo("float32").eps, name
    assert 0.145 * 100 < 14.5 < 0.145 * 100 + _constants.FLOAT64_PRODUCT_SLACK
    assert np.finfo("float64").eps < _constants.FLOAT64_FEASIBILITY_SLACK
