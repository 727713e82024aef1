"""affine.py: CenterAround, Hyperplane, Halfspace, AffineSet, Radial against float64 NumPy."""

import re

import keras
import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from tests.backend import float64_enabled
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import (
    affine_set_ref,
    center_ref,
    halfspace_ref,
    hyperplane_ref,
    radial_ref,
    radial_rings,
)

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


# ------------------------------------------------------------------ radial


def radial_feasible(p, tol):
    """Every ring of every (in, out) kernel holds one value, to `tol` of the largest entry."""
    return np.allclose(radial_ref(p), p, rtol=0, atol=tol * max(1.0, np.abs(p).max()))


# Odd (3x3, 5x5), even (2x2, 4x4), rows != cols, Conv1D and Conv3D kernels.
RADIAL_SHAPES = [
    (3, 3, 2, 4),
    (5, 5, 1, 3),
    (2, 2, 3, 2),
    (4, 4, 2, 1),
    (3, 4, 2, 2),
    (5, 3, 1, 1),
    (4, 2, 3),
    (3, 3, 3, 2, 1),
]


class TestRadialProperties(PropertySuite):
    cases = [Case(kc.Radial(), s, radial_ref, feasible=radial_feasible) for s in RADIAL_SHAPES]


def radial_kernel(taps):
    """A kernel of shape `(*taps.shape, 1, 1)`: the taps of one (in, out) pair."""
    return np.asarray(taps, "float64")[..., None, None]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "taps, want",
    [
        ([[1.0, 2.0], [3.0, 6.0]], [[3.0, 3.0], [3.0, 3.0]]),  # 2x2: one ring
        (  # 3x3: the centre, the edges, the corners
            [[1.0, 2.0, 0.0], [4.0, 5.0, 6.0], [3.0, 0.0, 1.0]],
            [[1.25, 3.0, 1.25], [3.0, 5.0, 3.0], [1.25, 3.0, 1.25]],
        ),
        (  # 4x4: the inner 4, the 8 around them, the corners
            [[1.0, 8.0, 0, 3.0], [0, 2.0, 4.0, 0], [0, 0, 2.0, 0], [1.0, 0, 0, 3.0]],
            [
                [2.0, 1.0, 1.0, 2.0],
                [1.0, 2.0, 2.0, 1.0],
                [1.0, 2.0, 2.0, 1.0],
                [2.0, 1.0, 1.0, 2.0],
            ],
        ),
        (  # 5x5: (1, 2) from the centre is a ring of 8, (0, 2) one of 4
            [[0, 1.0, 1.0, 0, 0]] + [[0.0] * 5] * 4,
            [
                [0, 0.125, 0.25, 0.125, 0],
                [0.125, 0, 0, 0, 0.125],
                [0.25, 0, 0, 0, 0.25],
                [0.125, 0, 0, 0, 0.125],
                [0, 0.125, 0.25, 0.125, 0],
            ],
        ),
        ([[1.0, 2.0, 3.0], [4.0, 0.0, 8.0]], [[4.0, 1.0, 4.0], [4.0, 1.0, 4.0]]),  # 2x3
        ([1.0, 0.0, 4.0, 7.0], [4.0, 2.0, 2.0, 4.0]),  # Conv1D: mirror pairs
        ([1.0, 5.0, 3.0], [2.0, 5.0, 2.0]),
        (np.eye(8)[0].reshape(2, 2, 2), np.full((2, 2, 2), 0.125)),  # Conv3D 2x2x2: one shell
    ],
    ids=["2x2", "3x3", "4x4", "5x5", "2x3", "conv1d-4", "conv1d-3", "conv3d"],
)
def test_radial_exact_answers(taps, want, dtype):
    with float64_enabled():
        got = to_np(kc.Radial()(tensor(radial_kernel(taps), dtype)))
    np.testing.assert_allclose(got[..., 0, 0], want, rtol=0, atol=1e-7)


def test_radial_averages_each_channel_pair_on_its_own():
    w = sample((3, 3, 2, 3), "normal", seed=60)
    got = to_np(kc.Radial()(tensor(w, "float32")))
    rings = radial_rings((3, 3))
    for c in range(2):
        for f in range(3):
            flat = w[:, :, c, f].ravel()
            means = np.array([flat[rings == r].mean() for r in rings])
            np.testing.assert_allclose(got[:, :, c, f].ravel(), means, rtol=0, atol=1e-6)


def test_radial_agrees_with_cvxpy_on_the_constrained_least_squares_problem():
    """An independent reference: the QP min ||z - w||^2 subject to z equal on each ring."""
    cp = pytest.importorskip("cvxpy", reason="cvxpy is the QP reference (dependency group test)")
    w = sample((4, 5, 2, 1), "normal", seed=61)
    got = to_np(kc.Radial()(tensor(w, "float32")))
    rings = radial_rings((4, 5))
    for c in range(2):
        z = cp.Variable(20)
        flat = w[:, :, c, 0].ravel()
        same = [z[i] == z[j] for i in range(20) for j in range(i) if rings[i] == rings[j]]
        cp.Problem(cp.Minimize(cp.sum_squares(z - flat)), same).solve()
        np.testing.assert_allclose(got[:, :, c, 0].ravel(), z.value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(
    "shape", [(3, 3, 2, 2), (4, 4, 1, 3), (5, 2, 2, 1), (5, 1, 2), (3, 3, 3, 1, 1)]
)
def test_radial_keeps_a_radial_kernel_bit_for_bit(shape, dtype):
    rings = radial_rings(shape[:-2])
    values = sample((rings.max() + 1, *shape[-2:]), "normal", seed=62)
    w = values[rings].reshape(shape)
    with float64_enabled():
        x = tensor(w, dtype)
        np.testing.assert_array_equal(to_np(kc.Radial()(x)), to_np(x))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_tap_stays_in_its_ring_and_channel_pair(bad):
    w = sample((5, 5, 2, 2), "normal", seed=63)
    poisoned = w.copy()
    poisoned[0, 1, 1, 0] = bad  # a ring of 8 taps of the pair (1, 0)
    clean, got = to_np(kc.Radial()(tensor(w))), to_np(kc.Radial()(tensor(poisoned)))
    ring = (radial_rings((5, 5)) == radial_rings((5, 5))[1]).reshape(5, 5)
    hit = np.zeros(w.shape, dtype=bool)
    hit[:, :, 1, 0] = ring
    assert not np.isfinite(got[hit]).any()
    np.testing.assert_array_equal(got[~hit], clean[~hit])


def square_rings(n):
    """An n x n kernel equal on each square ring (one Chebyshev distance from the centre), as
    tf.keras 2's RadialConstraint made it: the value is the ring's number."""
    offset = np.abs(2 * np.arange(n) - (n - 1))
    return np.maximum(offset[:, None], offset[None, :]).astype("float64")


def test_tf_keras_square_rings_lie_in_the_set_up_to_7x7_only():
    """The docstring's comparison: a kernel equal on square rings is radial up to 7x7 (and
    9x9); at 8x8 a Euclidean ring joins taps of two square rings, so Radial moves it."""
    for n in (2, 3, 4, 5, 6, 7, 9):
        k = radial_kernel(square_rings(n))
        np.testing.assert_array_equal(to_np(kc.Radial()(tensor(k))), k)
    for n in (8, 10, 11):
        k = radial_kernel(square_rings(n))
        assert not np.allclose(to_np(kc.Radial()(tensor(k))), k)


def test_rings_of_large_kernels_join_taps_of_two_patterns():
    # 11x11: the taps (5, 0) and (3, 4) from the centre are both at distance 5.
    taps = np.zeros((11, 11))
    taps[5 + 5, 5] = 1.0
    got = to_np(kc.Radial()(tensor(radial_kernel(taps))))[..., 0, 0]
    assert got[5 + 3, 5 + 4] == got[5, 5 + 5] == got[5 + 5, 5] > 0
    assert np.count_nonzero(got) == 12  # 4 taps of (5, 0) and 8 of (3, 4)
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-6)
    # 3x5: the taps (1, 0) and (0, 1) from the centre, of the centre column and row.
    taps = np.zeros((3, 5))
    taps[0, 2] = 1.0
    got = to_np(kc.Radial()(tensor(radial_kernel(taps))))[..., 0, 0]
    want = np.zeros((3, 5))
    want[0, 2] = want[2, 2] = want[1, 1] = want[1, 3] = 0.25
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(5, 5), (4,), (), (2, 2, 2, 2, 1, 1)])
def test_radial_refuses_a_weight_that_is_not_a_conv_kernel(shape):
    with pytest.raises(
        ValueError,
        match=r"Radial needs a Conv1D/2D/3D kernel \(\*spatial, in_channels, filters\), "
        rf"but got a weight of shape {re.escape(str(shape))}",
    ):
        kc.Radial()(tensor(np.ones(shape)))


def test_radial_has_no_arguments_and_trains_a_radial_conv_layer():
    assert kc.Radial().get_config() == {} and repr(kc.Radial()) == "Radial()"
    keras.utils.set_random_seed(0)
    layer = keras.layers.Conv2D(3, 3, kernel_constraint=kc.Radial())
    model = keras.Sequential([keras.Input((6, 6, 2)), layer, keras.layers.Flatten()])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = sample((8, 6, 6, 2), seed=64).astype("float32")
    model.fit(x, np.ones((8, 48), "float32"), epochs=1, verbose=0)
    kernel = to_np(layer.kernel)
    np.testing.assert_allclose(kernel, radial_ref(kernel), rtol=0, atol=1e-6)
    assert not np.allclose(kernel, kernel[1:2, 1:2])  # not constant: three rings
