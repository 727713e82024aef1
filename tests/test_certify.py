"""`lipschitz_bound` and `layer_lipschitz_bounds` against brute force.

Linear models: the exact constant is the float64 spectral norm of the
model's matrix, built from the model applied to every one-hot input. Others:
the bound must exceed every ratio ||f(a) - f(b)|| / ||a - b|| on random
pairs. And a compiled `fit()` with `ConvSpectralNorm` keeps the certificate.
"""

import math
import warnings

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints import certify
from tests.helpers import to_np

L = keras.layers
# float32 forward passes: the brute-force matrices are exact to about this.
RTOL = 1e-5


def linear_matrix(model, input_shapes):
    """The matrix of an affine model (one or several inputs, concatenated), from one-hot inputs."""
    sizes = [math.prod(s) for s in input_shapes]
    n = sum(sizes)
    eye = np.eye(n, dtype="float32")
    parts, zeros, start = [], [], 0
    for shape, size in zip(input_shapes, sizes, strict=True):
        parts.append(eye[:, start : start + size].reshape(n, *shape))
        zeros.append(np.zeros((1, *shape), "float32"))
        start += size
    one = parts if len(parts) > 1 else parts[0]
    zero = zeros if len(zeros) > 1 else zeros[0]
    out = np.asarray(to_np(model(one)), "float64") - to_np(model(zero))
    return out.reshape(n, -1)


def exact_norm(model, input_shapes):
    return float(np.linalg.norm(linear_matrix(model, input_shapes), 2))


def sequential(input_shape, *layers):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input(input_shape), *layers])


def batch_norm(channels):
    """A BatchNormalization layer with nontrivial moving statistics and scale."""
    layer = L.BatchNormalization()
    layer.build((None, channels))
    rng = np.random.default_rng(3)
    layer.gamma.assign(rng.uniform(-2, 2, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.2, 3, channels).astype("float32"))
    return layer


LINEAR = {
    "dense_chain": lambda: sequential((5,), L.Dense(7), L.Dense(3)),
    "conv1d_stride2_same": lambda: sequential((11, 2), L.Conv1D(3, 5, strides=2, padding="same")),
    "conv2d_nonsquare_valid": lambda: sequential(
        (9, 8, 2), L.Conv2D(4, (3, 2), strides=(1, 3), padding="valid")
    ),
    "conv2d_dilated": lambda: sequential(
        (8, 8, 2), L.Conv2D(3, 3, padding="same", dilation_rate=2)
    ),
    "conv2d_groups": lambda: sequential((7, 7, 4), L.Conv2D(4, 3, groups=2)),
    "conv3d_stride2": lambda: sequential((5, 5, 5, 2), L.Conv3D(2, 3, strides=2, padding="same")),
    "conv2d_transpose": lambda: sequential(
        (4, 4, 2), L.Conv2DTranspose(3, 3, strides=2, padding="same")
    ),
    "conv1d_transpose": lambda: sequential((5, 3), L.Conv1DTranspose(2, 4, strides=3)),
    "depthwise": lambda: sequential((7, 7, 3), L.DepthwiseConv2D(3, depth_multiplier=2)),
    "separable": lambda: sequential(
        (6, 6, 2), L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same")
    ),
    "pools_and_padding": lambda: sequential(
        (6, 6, 2),
        L.AveragePooling2D(3, strides=1),
        L.ZeroPadding2D(1),
        L.AveragePooling2D(2, padding="same"),
        L.UpSampling2D(2),
        L.Cropping2D(1),
        L.Conv2D(2, 2),
        L.GlobalAveragePooling2D(),
    ),
    "batch_norm": lambda: sequential((4,), L.Dense(4), batch_norm(4), L.Dense(2)),
}


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_bound_of_a_linear_model_is_at_least_its_exact_norm(name):
    model = LINEAR[name]()
    exact = exact_norm(model, [model.input_shape[1:]])
    bound = kc.lipschitz_bound(model)
    assert bound >= exact * (1 - RTOL), (bound, exact)
    assert bound < 10 * exact, "the bound is far too loose to be of use"


def test_bound_of_one_dense_layer_is_its_spectral_norm():
    model = sequential((6,), L.Dense(4))
    exact = exact_norm(model, [(6,)])
    assert kc.lipschitz_bound(model) == pytest.approx(exact, rel=RTOL)
    assert kc.layer_lipschitz_bounds(model) == {
        model.layers[0].name: pytest.approx(exact, rel=RTOL)
    }


def test_linear_graph_with_branches_and_two_inputs():
    keras.utils.set_random_seed(1)
    a, b = keras.Input((4,)), keras.Input((3,))
    left = L.Dense(5)(a)
    right = L.Dense(5)(L.Concatenate()([a, b]))
    merged = L.Add()([left, right])
    out = L.Concatenate()([L.Dense(2)(merged), L.Average()([left, merged])])
    model = keras.Model([a, b], out)
    exact = exact_norm(model, [(4,), (3,)])
    assert kc.lipschitz_bound(model) >= exact * (1 - RTOL)


def test_nested_model_multiplies():
    inner = sequential((4,), L.Dense(4, name="inner_dense"))
    inner.layers[0].kernel.assign(2 * np.eye(4, dtype="float32"))
    x = keras.Input((4,))
    outer_dense = L.Dense(4, name="outer_dense")
    model = keras.Model(x, outer_dense(inner(x)))
    outer_dense.kernel.assign(3 * np.eye(4, dtype="float32"))
    assert kc.lipschitz_bound(model) == pytest.approx(6.0, rel=1e-6)
    bounds = kc.layer_lipschitz_bounds(model)
    assert bounds[inner.name] == pytest.approx(2.0, rel=1e-6)
    assert bounds["outer_dense"] == pytest.approx(3.0, rel=1e-6)


def test_overlapping_max_pooling_needs_its_square_root():
    """A spike at the center moves all 9 windows of a 3x3 stride-1 pooling: ratio 3."""
    model = sequential((5, 5, 1), L.MaxPooling2D(3, strides=1), L.Flatten())
    spike = np.zeros((1, 5, 5, 1), "float32")
    spike[0, 2, 2, 0] = 1.0
    ratio = np.linalg.norm(to_np(model(spike)) - to_np(model(np.zeros_like(spike))))
    assert ratio == pytest.approx(3.0)
    assert kc.lipschitz_bound(model) == pytest.approx(3.0)


def nonlinear_model():
    keras.utils.set_random_seed(2)
    x = keras.Input((8, 8, 2))
    c = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    c = L.MaxPooling2D(3, strides=2, padding="same", name="pool")(c)
    c = L.Conv2D(4, 3, padding="same", activation="elu")(c)
    skip = L.AveragePooling2D(2)(L.Conv2D(4, 1)(x))
    s = L.Add()([c, skip])
    s = L.LeakyReLU(negative_slope=0.3)(s)
    f = L.Flatten()(s)
    f = L.Dropout(0.5)(f)
    d = L.Dense(6, activation="gelu")(f)
    d = batch_norm(6)(d)
    e = L.Dense(6, activation="tanh")(f)
    m = L.Maximum()([d, e])
    cat = L.Concatenate()([m, L.Activation("sigmoid")(e), L.GlobalMaxPooling2D()(s)])
    out = L.Dense(3, activation="silu")(cat)
    out = L.Softmax()(L.ELU(alpha=2.0)(out))
    return keras.Model(x, out)


def largest_ratio(model, shape, pairs=512, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(pairs, *shape)).astype("float32")
    scales = np.where(np.arange(pairs) < pairs // 2, 1.0, 1e-2).reshape(-1, *[1] * len(shape))
    b = (a + scales * rng.normal(size=a.shape)).astype("float32")
    fa, fb = (np.asarray(to_np(model(v)), "float64").reshape(pairs, -1) for v in (a, b))
    gap = np.linalg.norm((a.astype("float64") - b).reshape(pairs, -1), axis=1)
    return float(np.max(np.linalg.norm(fa - fb, axis=1) / gap))


def test_bound_of_a_nonlinear_graph_exceeds_every_observed_ratio():
    model = nonlinear_model()
    bound = kc.lipschitz_bound(model)
    ratio = largest_ratio(model, (8, 8, 2))
    assert 0 < ratio <= bound * (1 + RTOL), (ratio, bound)
    bounds = kc.layer_lipschitz_bounds(model)
    assert bounds["pool"] == pytest.approx(2.0)  # pool 3, stride 2: ceil(3/2)**2 windows per entry


def test_batch_norm_bound_is_its_largest_scale():
    layer = batch_norm(5)
    model = sequential((5,), layer)
    scale = np.abs(to_np(layer.gamma)) / np.sqrt(to_np(layer.moving_variance) + layer.epsilon)
    assert kc.layer_lipschitz_bounds(model)[layer.name] == pytest.approx(scale.max(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(set(certify._ACTIVATION_CONSTANTS) - {"softmax"}))
def test_activation_constants_are_the_largest_slope(name):
    """Each constant is >= every chord slope of Keras's own function, and close to the largest."""
    fn = getattr(keras.activations, name)
    slopes = []
    for x in (np.arange(-4, 4, 1e-3, dtype="float32"), np.arange(-30, 30, 1e-2, dtype="float32")):
        y = np.asarray(to_np(fn(keras.ops.convert_to_tensor(x))), "float64")
        slopes.append(np.abs(np.diff(y) / np.diff(x.astype("float64"))))
    slopes = np.concatenate(slopes)
    constant = certify._ACTIVATION_CONSTANTS[name]
    assert slopes.max() <= constant * (1 + 1e-3), (name, slopes.max())
    assert slopes.max() >= constant * (1 - 5e-3), (name, slopes.max())


def test_softmax_is_within_its_constant():
    model = sequential((5,), L.Dense(5, activation="softmax"))
    model.layers[0].kernel.assign(4 * np.eye(5, dtype="float32"))
    assert largest_ratio(model, (5,)) <= kc.lipschitz_bound(model) * (1 + RTOL)


class Doubler(keras.Model):
    def call(self, x):
        return 2 * x


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: sequential((4,), L.LayerNormalization()), "LayerNormalization"),
        (lambda: sequential((4,), L.Dense(2, activation="exponential")), "exponential"),
        (lambda: sequential((4,), L.Dense(2, activation=lambda x: 3 * x)), "<lambda>"),
        (lambda: sequential((4,), L.ReLU(threshold=0.5)), "threshold"),
        (lambda: sequential((4, 4, 1), L.UpSampling2D(interpolation="bilinear")), "bilinear"),
        (lambda: sequential((4,), L.Dense(4), L.Lambda(lambda x: x * x)), "Lambda"),
        (lambda: keras.Sequential([L.Dense(2)]), "not built"),
        (lambda: Doubler(), "subclassed"),
        (lambda: L.Dense(2), "keras.Model"),
    ],
)
def test_what_can_not_be_bounded_is_an_error_naming_it(build, match):
    with pytest.raises(ValueError, match=match):
        kc.lipschitz_bound(build())


def test_an_operation_outside_a_layer_is_an_error():
    x = keras.Input((3,))
    model = keras.Model(x, L.Dense(2)(x) * 2.0)
    with pytest.raises(ValueError, match="outside any layer"):
        kc.lipschitz_bound(model)


def conv_matrix_norm(kernel, input_shape, strides):
    """The exact L2 norm of one "same" convolution at `input_shape`, from one-hot inputs."""
    layer = L.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=strides, padding="same")
    model = sequential(input_shape, layer)
    layer.kernel.assign(kernel)
    return exact_norm(model, [input_shape])


@pytest.mark.long_on("torch")
def test_compiled_fit_with_conv_spectral_norm_keeps_the_certificate():
    keras.utils.set_random_seed(0)
    limits = {"c1": 1.0, "c2": 0.5, "out": 2.0}
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, padding="same", activation="relu", name="c1",
                     kernel_constraint=kc.ConvSpectralNorm(limits["c1"])),
            L.Conv2D(4, 3, strides=2, padding="same", name="c2",
                     kernel_constraint=kc.ConvSpectralNorm(limits["c2"])),
            L.Flatten(),
            L.Dense(2, name="out", kernel_constraint=kc.SpectralNorm(limits["out"])),
        ]
    )  # fmt: skip
    for name in limits:  # start well outside every set
        kernel = model.get_layer(name).kernel
        kernel.assign(kernel * 5.0)
    cap = math.prod(limits.values())
    assert kc.lipschitz_bound(model) > 2 * cap
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.normal(size=(64, 2)).astype("float32")
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for name, strides in (("c1", 1), ("c2", 2)):
        kernel = to_np(model.get_layer(name).kernel)
        assert conv_matrix_norm(kernel, (8, 8, 1 if name == "c1" else 4), strides) <= limits[
            name
        ] * (1 + RTOL)
    assert kc.lipschitz_bound(model) <= cap * (1 + RTOL)


def test_the_certificates_are_python_floats_read_without_autodiff():
    # On torch the kernels are parameters that require grad: the bounds are
    # read from them as NumPy, never as tensors that carry a gradient.
    model = keras.Sequential(
        [keras.Input((6, 6, 2)), L.Conv2D(3, 3, name="conv"), L.Flatten(), L.Dense(2, name="out")]
    )
    with warnings.catch_warnings():
        # torch's "Converting a tensor with requires_grad=True to a scalar" is
        # a UserWarning (Keras's own NumPy conversion on torch raises a
        # DeprecationWarning of NumPy 2 that the project's filters ignore).
        warnings.simplefilter("error", UserWarning)
        whole = kc.lipschitz_bound(model)
        per_layer = kc.layer_lipschitz_bounds(model)
    assert type(whole) is float
    assert all(type(b) is float for b in per_layer.values())
    assert whole <= per_layer["conv"] * per_layer["out"] * (1 + RTOL)
