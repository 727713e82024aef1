"""simplex.py: Simplex and L1Ball, against the sort-based projection of Duchi et al. (2008)."""

import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import l1_ref, simplex_ref


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
    ]


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
