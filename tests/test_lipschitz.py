"""lipschitz.py: certified convolution norms against brute force, ConvSpectralNorm and AOL.

The ground truth is the convolution's own matrix (`references.conv_matrix`, the
kernel applied to every one-hot input, float64) and NumPy's spectral norm of it.
"""

import warnings

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import BACKEND
from tests.helpers import param_id, sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import (
    aol_ref,
    conv_bound_ref,
    conv_matrix,
    conv_spectral_norm_ref,
    sigma1,
    symbol_sup,
)

# float32 singular values and bounds agree with float64 to this relative error.
F32 = 1e-5

# Both are rescalings, not the nearest point (`projection=False`): the suite's
# non-expansive and optimality tests are not generated for them.
CASES = [
    Case(kc.ConvSpectralNorm(1.0), (3, 3, 2, 3), conv_spectral_norm_ref(1.0), projection=False),
    Case(
        kc.ConvSpectralNorm(0.5, iterations=3, grid_tolerance=0.05),
        (4, 3, 2),
        conv_spectral_norm_ref(0.5, 3, 0.05),
        projection=False,
    ),
]


class TestConvSpectralNormProperties(PropertySuite):
    cases = CASES


class TestAOLProperties(PropertySuite):
    """AOL is not a projection: idempotence and fixed points are replaced by what holds."""

    cases = [
        Case(kc.AOL(), (4, 5), aol_ref, projection=False, idempotent=False),
        Case(kc.AOL(), (3, 2, 3, 4), aol_ref, projection=False, idempotent=False),
    ]

    @pytest.mark.parametrize("kind", ["normal", "ties"])
    def test_feasible_input_unchanged(self, case, kind):
        """Its fixed points: orthonormal rows (one tap of a Conv kernel), where P = I."""
        rows = np.linalg.qr(sample(case.shape[-1:] + case.shape[-2:-1], kind, seed=2))[0].T
        w = np.zeros(case.shape)
        w[(0,) * (w.ndim - 2)] = rows
        np.testing.assert_allclose(to_np(case.constraint(tensor(w))), w, atol=1e-6)

    @pytest.mark.parametrize("kind", ["normal", "ties"])
    def test_idempotent(self, case, kind):
        """Applied twice it may move again (to the reference's second step), still certified."""
        w = sample(case.shape, kind, seed=3)
        twice = to_np(case.constraint(case.constraint(tensor(w))))
        np.testing.assert_allclose(twice, aol_ref(aol_ref(w)), atol=1e-5)
        assert exact_norm(twice) <= 1 + F32


def exact_norm(kernel, sizes=(5, 8)):
    """The largest exact norm of the convolution (stride 1, "same") at a few input sizes."""
    if kernel.ndim == 2:
        return sigma1(kernel)
    n_max = 6 if kernel.ndim == 5 else max(sizes)
    return max(sigma1(conv_matrix(kernel, n)) for n in sizes if n <= n_max)


def bound(kernel, **kwargs):
    return float(to_np(kc.conv_norm_bound(tensor(kernel), **kwargs)))


# ------------------------------------------ the bound against brute force

KERNELS = [
    (3, 2, 3),  # Conv1D
    (7, 2, 2),
    (6, 1, 2),
    (1, 3, 2),  # 1-tap: the bound is the matrix norm
    (3, 3, 3, 4),  # Conv2D
    (4, 5, 2, 3),  # non-square, even
    (2, 3, 2, 2, 2),  # Conv3D
]


@pytest.mark.parametrize("shape", KERNELS, ids=str)
def test_bound_holds_for_every_size_stride_and_padding(shape):
    kernel = sample(shape, "normal", seed=sum(shape))
    b = bound(kernel)
    np.testing.assert_allclose(b, conv_bound_ref(kernel), rtol=F32)
    sizes = (3, 4) if len(shape) == 5 else (5, 6, 9)
    for n in sizes:
        for stride in (1, 2, 3):
            for padding in ("same", "valid"):
                if padding == "valid" and n < max(shape[:-2]):
                    continue  # no output
                exact = sigma1(conv_matrix(kernel, n, stride, padding))
                assert exact <= b, (n, stride, padding, exact, b)
    # ConvSpectralNorm: inside, and within 5% of the bound as the input grows.
    out = to_np(kc.ConvSpectralNorm(1.0)(tensor(kernel)))
    assert max(sigma1(conv_matrix(out, n)) for n in sizes) <= 1 + F32
    large = symbol_sup(out, 32 if len(shape) == 5 else 256)  # the norm at large inputs
    assert 1 / 1.05 <= large <= 1 + F32, large


def test_the_brute_force_matrix_is_keras_conv():
    """`conv_matrix` has Keras's padding and stride conventions (checked in float32)."""
    kernel = sample((3, 2, 2, 3), "normal", seed=1)
    x = sample((1, 7, 7, 2), "normal", seed=2)
    for stride in (1, 2, 3):
        for padding in ("same", "valid"):
            want = keras.ops.conv(tensor(x), tensor(kernel), strides=stride, padding=padding)
            got = x.reshape(1, -1) @ conv_matrix(kernel, 7, stride, padding)
            np.testing.assert_allclose(got.ravel(), to_np(want).ravel(), atol=1e-4)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (keras.layers.Conv1DTranspose(3, 4, strides=2, padding="same"), (1, 6, 2)),
        (keras.layers.Conv2DTranspose(2, (3, 2), strides=3, padding="valid"), (1, 4, 5, 3)),
    ],
    ids=["Conv1DTranspose", "Conv2DTranspose"],
)
def test_bound_holds_for_a_transposed_convolution_with_its_kernel_as_it_is(layer, shape):
    layer.build(shape)
    kernel = sample(tuple(layer.kernel.shape), "normal", seed=3)
    layer.kernel.assign(kernel.astype("float32"))
    size = int(np.prod(shape))
    basis = np.eye(size).reshape((size, *shape[1:]))
    matrix = to_np(layer(tensor(basis)) - layer.bias).reshape(size, -1)
    assert sigma1(matrix) <= bound(kernel) * (1 + F32)


def test_dense_norm_bound_is_certified_and_tight():
    w = sample((9, 5), "normal", seed=4)
    b = float(to_np(kc.dense_norm_bound(tensor(w))))
    assert sigma1(w) <= b <= sigma1(w) * (1 + 1e-3)
    # A Dense kernel is a convolution with no spatial axis: the same norm.
    assert sigma1(w) <= bound(w) <= sigma1(w) * (1 + 1e-3)
    out = to_np(kc.ConvSpectralNorm(1.0)(tensor(w)))
    assert 1 - 1e-3 <= sigma1(out) <= 1 + F32


@pytest.mark.parametrize(
    "layer, fn",
    [
        (keras.layers.Conv2D(3, 3), kc.conv_norm_bound),
        (keras.layers.Conv1DTranspose(2, 3), kc.conv_norm_bound),
        (keras.layers.Dense(3), kc.dense_norm_bound),
    ],
    ids=["conv", "conv_transpose", "dense"],
)
def test_a_bound_of_a_layers_kernel_is_a_number_cut_from_autodiff(layer, fn):
    layer.build((None, 5, 5, 2) if isinstance(layer, keras.layers.Conv2D) else (None, 4, 2))
    value = layer.kernel.value  # on torch a parameter that requires grad
    bound = fn(value)
    if BACKEND == "torch":
        assert value.requires_grad
        assert not bound.requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on float() of a tensor that requires grad
        number = float(bound)
    # The same value as from the kernel read out as NumPy, on every backend.
    assert number == float(to_np(fn(to_np(layer.kernel).astype("float32"))))


# ---------------------------------------------------------- ConvSpectralNorm


def test_a_kernel_inside_is_unchanged_bit_for_bit():
    kernel = (sample((3, 3, 2, 2), "normal", seed=6) * 0.05).astype("float32")
    assert bound(kernel) < 1
    np.testing.assert_array_equal(to_np(kc.ConvSpectralNorm(1.0)(tensor(kernel))), kernel)


def test_the_reshaped_matrix_bound_is_not_enough():
    """SpectralNorm bounds the (taps * in, out) matrix: the operator can be larger."""
    kernel = np.ones((3, 3, 1, 1))
    reshaped = to_np(kc.SpectralNorm(1.0)(tensor(kernel)))
    assert exact_norm(reshaped) > 2
    assert exact_norm(to_np(kc.ConvSpectralNorm(1.0)(tensor(kernel)))) <= 1 + F32


# ---------------------------------------------------------------- AOL


@pytest.mark.parametrize(
    "shape", [(6, 3), (3, 6), (3, 2, 2), (3, 3, 2, 3), (2, 3, 2, 1, 2)], ids=str
)
def test_aol_is_certified_1_lipschitz(shape):
    out = to_np(kc.AOL()(tensor(sample(shape, "normal", seed=7))))
    assert exact_norm(out) <= 1 + F32
    if len(shape) > 2:
        assert symbol_sup(out, 32) <= 1 + F32
        for stride in (2, 3):
            assert sigma1(conv_matrix(out, 5, stride, "valid")) <= 1 + F32


def test_aol_leaves_zero_channels_alone():
    w = sample((3, 3, 3, 2), "normal", seed=8)
    w[:, :, 1, :] = 0
    out = to_np(kc.AOL()(tensor(w)))
    assert np.all(np.isfinite(out)) and not out[:, :, 1].any()


# ------------------------------------------------- training, penalty, errors


@pytest.mark.long_on("torch")
def test_a_compiled_fit_keeps_the_certificate():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            # Few steps and a coarse grid: torch.compile's time grows with the graph.
            keras.layers.Conv2D(
                3, 3, padding="same", kernel_constraint=kc.ConvSpectralNorm(1.0, 2, 0.1)
            ),
            keras.layers.Conv2D(2, 3, strides=2, kernel_constraint=kc.AOL()),
            keras.layers.Flatten(),
            keras.layers.Dense(2, kernel_constraint=kc.AOL()),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", jit_compile=True)
    x, y = sample((16, 6, 6, 2), seed=9), sample((16, 2), seed=10) * 10
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    conv, aol, _, dense = (to_np(getattr(layer, "kernel", np.zeros(()))) for layer in model.layers)
    assert bound(conv) <= 1 + F32
    assert exact_norm(aol) <= 1 + F32
    assert sigma1(dense) <= 1 + F32


def test_penalty_charges_the_distance_to_the_rescaled_kernel():
    kernel = sample((3, 3, 2, 2), "normal", seed=11)
    penalty = float(to_np(kc.Penalty(kc.ConvSpectralNorm(1.0), strength=0.5)(tensor(kernel))))
    want = 0.5 * np.sum((kernel - conv_spectral_norm_ref(1.0)(kernel)) ** 2)
    np.testing.assert_allclose(penalty, want, rtol=1e-4)


def test_save_and_load_in_a_keras_file(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((5, 2)),
            keras.layers.Conv1D(2, 3, kernel_constraint=kc.ConvSpectralNorm(0.5, iterations=4)),
            keras.layers.Conv1D(2, 3, kernel_constraint=kc.AOL()),
        ]
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    first, second = (layer.kernel.constraint for layer in loaded.layers)
    assert isinstance(first, kc.ConvSpectralNorm) and first.get_config() == {
        "max_value": 0.5,
        "iterations": 4,
        "grid_tolerance": 0.02,
    }
    assert isinstance(second, kc.AOL)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.ConvSpectralNorm(max_value=-1), "ConvSpectralNorm.*max_value.*-1"),
        (lambda: kc.ConvSpectralNorm(iterations=-1), "ConvSpectralNorm.*iterations.*-1"),
        (lambda: kc.ConvSpectralNorm(grid_tolerance=0), "ConvSpectralNorm.*grid_tolerance.*0"),
        (lambda: kc.conv_norm_bound(np.ones((3, 1, 1)), iterations=1.5), "iterations.*1.5"),
        (lambda: kc.dense_norm_bound(np.ones((3, 1)), iterations=None), "iterations.*None"),
    ],
)
def test_bad_arguments_fail_early(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "fn, shape",
    [
        (kc.ConvSpectralNorm(), (4,)),
        (kc.ConvSpectralNorm(), (1, 1, 1, 1, 1, 1)),
        (kc.conv_norm_bound, (3,)),
        (kc.AOL(), (5,)),
        (kc.dense_norm_bound, (5,)),
    ],
    ids=param_id,
)
def test_a_weight_of_the_wrong_rank_names_its_shape(fn, shape):
    with pytest.raises(ValueError, match=r"shape \(" + ", ".join(map(str, shape))):
        fn(tensor(np.ones(shape)))
