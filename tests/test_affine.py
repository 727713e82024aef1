"""affine.py: CenterAround, Hyperplane, Halfspace, AffineSet against float64 NumPy."""

import keras
import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import affine_set_ref, center_ref, halfspace_ref, hyperplane_ref

NORMAL = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
FILTER = np.arange(12.0).reshape(3, 2, 2) - 5  # a normal of a (3, 2, 2) slice
MATRIX = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.0, 2.0, 0.0, 0.5]])
# Bayar & Stamm (2016): the centre tap -1, the other taps of a 3x3 kernel summing to 1.
CENTRE = np.zeros((3, 3))
CENTRE[1, 1] = 1.0
BAYAR = np.stack([CENTRE, 1.0 - CENTRE])
WIDE = np.random.default_rng(3).normal(size=(17, 40))  # 17 basis vectors: the matmul path
SQUARE = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, -1.0], [1.0, 0.0, 3.0]])  # full rank: one point


class TestCenterAroundProperties(PropertySuite):
    cases = [
        Case(kc.CenterAround(), (6, 4), center_ref(0.0, None)),
        Case(kc.CenterAround(0.5, axis=0), (6, 4), center_ref(0.5, 0)),
        Case(kc.CenterAround(-1.0, axis=[0, -2]), (3, 4, 2), center_ref(-1.0, (0, 1))),
    ]


class TestAffineProperties(PropertySuite):
    cases = [
        Case(kc.Hyperplane(NORMAL, 2.0), (6, 4), hyperplane_ref(NORMAL, 2.0, 0)),
        Case(
            kc.Hyperplane(FILTER, -1.0, [0, 1, 2]),
            (3, 2, 2, 4),
            hyperplane_ref(FILTER, -1.0, (0, 1, 2)),
        ),
        Case(kc.Halfspace(NORMAL, 0.5), (6, 4), halfspace_ref(NORMAL, 0.5, 0)),
        Case(kc.Halfspace(None, 1.0, axis=-1), (4, 6), halfspace_ref(None, 1.0, 1)),
        Case(
            kc.AffineSet(BAYAR, [-1.0, 1.0], axis=[0, 1]),
            (3, 3, 2, 2),
            affine_set_ref(BAYAR, [-1.0, 1.0], (0, 1)),
        ),
        Case(kc.AffineSet(WIDE, 0.5), (40, 3), affine_set_ref(WIDE, 0.5, 0)),
        # More rows than half the slice: the null-space form.
        Case(kc.AffineSet(SQUARE[:2], 1.0, axis=1), (5, 3), affine_set_ref(SQUARE[:2], 1.0, 1)),
        Case(
            kc.AffineSet(SQUARE, [1.0, 2.0, 3.0]),
            (3, 2),
            affine_set_ref(SQUARE, [1.0, 2.0, 3.0], 0),
        ),
    ]


def test_the_results_satisfy_the_constraints_to_rounding():
    w = sample((3, 2, 2, 5), "normal", seed=20) * 10
    conv = sample((3, 3, 2, 5), "normal", seed=21) * 10
    with float64_enabled():
        plane = to_np(kc.Hyperplane(FILTER.ravel(), 2.0, axis=[0, 1, 2])(tensor(w, "float64")))
        half = to_np(kc.Halfspace(FILTER, -3.0, axis=[0, 1, 2])(tensor(w, "float64")))
        bayar = to_np(kc.AffineSet(BAYAR, [-1.0, 1.0], axis=[0, 1])(tensor(conv, "float64")))
    np.testing.assert_allclose(np.einsum("ijkl,ijk->l", plane, FILTER), 2.0, rtol=0, atol=1e-12)
    assert np.all(np.einsum("ijkl,ijk->l", half, FILTER) <= -3.0 + 1e-12)
    np.testing.assert_allclose(bayar[1, 1], -1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bayar.sum(axis=(0, 1)) - bayar[1, 1], 1.0, rtol=0, atol=1e-12)


def test_a_full_rank_square_matrix_is_a_single_point():
    out = to_np(kc.AffineSet(SQUARE, [1.0, 2.0, 3.0])(tensor(sample((3, 4), seed=21))))
    want = np.linalg.solve(SQUARE, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(out, np.repeat(want[:, None], 4, axis=1), atol=1e-6)


def test_zero_slices_and_feasible_halfspace_slices():
    np.testing.assert_allclose(to_np(kc.Hyperplane(None, 3.0)(tensor(np.zeros((3, 2))))), 1.0)
    w = tensor(np.array([[-1.0, 4.0], [0.5, 1.0]]))
    # The first column is inside (sum -0.5 <= 1): returned bit for bit.
    out = to_np(kc.Halfspace(None, 1.0)(w))
    assert out[:, 0].tolist() == [-1.0, 0.5]
    np.testing.assert_allclose(out[:, 1], [2.0, -1.0], atol=1e-6)


def test_singular_and_inconsistent_matrices_are_clear_errors():
    dependent = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    with pytest.raises(
        ValueError, match=r"AffineSet.*full row rank.*rank 1 for 2 rows.*has a solution"
    ):
        kc.AffineSet(dependent, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"rank 1 for 2 rows.*has no solution.*residual 0\.[0-9]"):
        kc.AffineSet(dependent, [1.0, 0.0])
    with pytest.raises(ValueError, match=r"rank 3 for 4 rows"):
        kc.AffineSet(np.vstack([SQUARE, [1.0, 1.0, 1.0]]), 0.0)


def test_the_normal_and_matrix_are_checked_against_the_slice():
    with pytest.raises(
        ValueError, match=r"Hyperplane: `normal` of shape \(6,\).*slice.*shape \(4,\).*4 entries"
    ):
        kc.Hyperplane(NORMAL)(tensor(np.ones((4, 2))))
    with pytest.raises(ValueError, match=r"AffineSet: `matrix` of shape \(3, 3\).*\(3, 2\)"):
        kc.AffineSet(BAYAR, [-1.0, 1.0], axis=[0, 1])(tensor(np.ones((3, 2, 1, 1))))
    # The slice's own shape or flat, never a reshape of another shape.
    with pytest.raises(ValueError, match=r"Halfspace: `normal` of shape \(2, 6\)"):
        kc.Halfspace(FILTER.reshape(2, 6), axis=[0, 1, 2])(tensor(np.ones((3, 2, 2, 1))))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Hyperplane([0.0, 0.0]), "Hyperplane: `normal` must be a finite, non-zero"),
        (lambda: kc.Hyperplane(2.0), "Hyperplane: `normal` must be a finite, non-zero array"),
        (lambda: kc.Hyperplane([1.0, np.inf]), "Hyperplane: `normal` must be a finite"),
        (lambda: kc.Hyperplane(offset="b"), "Hyperplane: `offset` must be a real number"),
        (lambda: kc.Halfspace([1.0], axis=1.5), "Halfspace: `axis`"),
        (lambda: kc.Halfspace(["a"]), "Halfspace: `normal` must be real numbers"),
        (lambda: kc.AffineSet([1.0, 2.0]), r"AffineSet: `matrix` must be a finite array of shape"),
        (
            lambda: kc.AffineSet(MATRIX, [1.0, 2.0, 3.0]),
            r"AffineSet: `offset` must be a finite number or 2 numbers",
        ),
        (lambda: kc.AffineSet(MATRIX, np.nan), "AffineSet: `offset` must not contain NaN"),
    ],
)
def test_rejects_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_center_around_rejects_bad_arguments():
    with pytest.raises(ValueError, match="CenterAround.*ref_value"):
        kc.CenterAround(ref_value="zero")
    with pytest.raises(ValueError, match="CenterAround.*axis"):
        kc.CenterAround(axis=1.5)


def test_center_around_axis_out_of_range_names_axis_and_shape():
    with pytest.raises(ValueError, match=r"axis.*3.*\(4, 2\)"):
        kc.CenterAround(axis=3)(tensor(np.ones((4, 2))))


def test_integer_weights_are_a_type_error():
    with pytest.raises(TypeError, match="int32"):
        kc.CenterAround()(ops.convert_to_tensor(np.arange(4, dtype="int32")))


def test_saved_with_arrays_and_loaded_in_safe_mode_and_as_penalties(tmp_path):
    keras.utils.set_random_seed(0)
    bayar = kc.AffineSet(BAYAR, [-1.0, 1.0], axis=[0, 1])
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, kernel_constraint=bayar),
            keras.layers.Flatten(),
            keras.layers.Dense(
                3,
                kernel_constraint=kc.Halfspace(np.linspace(-1.0, 1.0, 32), 0.5),
                bias_constraint=kc.Hyperplane(offset=1.0),
            ),
            keras.layers.Dense(3, kernel_regularizer=kc.Penalty(kc.DoublyStochastic(3))),
        ]
    )
    path = tmp_path / "affine.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for layer, clone in zip(model.layers, loaded.layers, strict=True):
        for name in ("kernel_constraint", "bias_constraint", "kernel_regularizer"):
            if getattr(layer, name, None) is not None:
                assert getattr(clone, name).get_config() == getattr(layer, name).get_config()
    w = sample((3, 3, 1, 2), seed=30)
    np.testing.assert_array_equal(
        to_np(loaded.layers[0].kernel_constraint(tensor(w))), to_np(bayar(tensor(w)))
    )
    # The penalty is strength * ||w - P(w)||^2, zero on a doubly stochastic kernel.
    penalty = kc.Penalty(kc.DoublyStochastic(3), strength=0.5)
    m = sample((3, 3), seed=31)
    gap = to_np(kc.DoublyStochastic(3)(tensor(m))) - m
    assert float(to_np(penalty(tensor(m)))) == pytest.approx(0.5 * np.sum(gap**2), rel=1e-5)
    assert float(to_np(penalty(tensor(np.full((3, 3), 1 / 3))))) == pytest.approx(0, abs=1e-10)
