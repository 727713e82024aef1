"""matrix.py: Orthogonal, SpectralNorm, Symmetric, PSD, LowRank, SingularValueBand, EigenBand
and Skew against float64 NumPy SVD/eigh (tests/references.py)."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import BACKEND, float64_enabled, gradient, graph_breaks, reset_compiler
from tests.helpers import param_id, sample, spectrum, tensor, to_np
from tests.models import data
from tests.properties import Case, PropertySuite
from tests.references import (
    clip_singular_values,
    eigen_band,
    gram,
    low_rank,
    per_matrix,
    polar,
    power_rescale,
    psd,
    rescale,
    sigma1,
    singular_value_band,
    skew,
    symmetric,
)

TALL, WIDE, SQUARE, CONV = (8, 5), (5, 8), (6, 6), (3, 3, 2, 4)

torch_only = pytest.mark.skipif(BACKEND != "torch", reason="counts torch.compile's graph breaks")


# Where singular values tie, the polar factor and the truncated SVD are not
# unique, and a band with min_value > 0 has no unique nearest point for a
# singular matrix (the null vectors the SVD picks decide it): "ties" and
# "equal" inputs (often singular) are left out. So are "one_huge" and
# "mixed": their condition numbers reach 1e4, and the polar factor and a
# band move by about eps * cond(W) under rounding of W alone (torch's SVD was
# 9e-5 off in float32), a property of the problem, not of the method.
NO_TIES = ("normal",)

# Orthogonal, LowRank and a SingularValueBand above 0 are not convex (the
# registry's `convex`); SpectralNorm's "scale", "gram" and "power" rescale
# into the ball instead of projecting onto it.
CASES = [
    Case(kc.Orthogonal(), TALL, per_matrix(polar()), kinds=NO_TIES),
    Case(
        kc.Orthogonal(2.0, batched=True),
        (2, 4, 7),
        per_matrix(polar(2.0), batched=True),
        kinds=NO_TIES,
    ),
    Case(
        kc.Orthogonal(method="newton_schulz", iterations=30),
        CONV,
        per_matrix(polar()),
        kinds=NO_TIES,
    ),
    Case(kc.SpectralNorm(), TALL, per_matrix(clip_singular_values(1.0))),
    Case(kc.SpectralNorm(0.5), CONV, per_matrix(clip_singular_values(0.5))),
    Case(kc.SpectralNorm(1.0, method="scale"), WIDE, per_matrix(rescale(1.0)), projection=False),
    Case(kc.SpectralNorm(1.5, method="gram"), SQUARE, per_matrix(gram(1.5, 8)), projection=False),
    Case(
        kc.SpectralNorm(1.0, method="power"),
        WIDE,
        per_matrix(power_rescale(1.0, 8)),
        projection=False,
    ),
    Case(
        kc.SpectralNorm(0.5, method="power", iterations=3, batched=True),
        (2, 6, 4),
        per_matrix(power_rescale(0.5, 3), batched=True),
        projection=False,
    ),
    Case(
        kc.SpectralNorm(1.0, method="gram", iterations=2, batched=True),
        (3, 5, 4),
        per_matrix(gram(1.0, 2), batched=True),
        projection=False,
    ),
    Case(kc.Symmetric(), (4, 4), per_matrix(symmetric, batched=True)),
    Case(kc.PSD(), (2, 5, 5), per_matrix(psd, batched=True)),
    Case(kc.LowRank(2), TALL, per_matrix(low_rank(2)), kinds=NO_TIES),
    Case(kc.LowRank(3), CONV, per_matrix(low_rank(3)), kinds=NO_TIES),
    # From 0 the band is the spectral-norm ball: convex.
    Case(
        kc.SingularValueBand(0.0, 1.0),
        TALL,
        per_matrix(singular_value_band(0.0, 1.0)),
        convex=True,
    ),
    Case(
        kc.SingularValueBand(0.5, 2.0),
        CONV,
        per_matrix(singular_value_band(0.5, 2.0)),
        kinds=NO_TIES,
    ),
    Case(
        kc.SingularValueBand(0.8, None, batched=True),
        (2, 4, 7),
        per_matrix(singular_value_band(0.8), batched=True),
        kinds=NO_TIES,
    ),
    Case(kc.EigenBand(-0.5, 0.5), (2, 5, 5), per_matrix(eigen_band(-0.5, 0.5), batched=True)),
    Case(kc.EigenBand(min_value=0.1), (4, 4), per_matrix(eigen_band(0.1), batched=True)),
    Case(kc.Skew(), (2, 4, 4), per_matrix(skew, batched=True)),
]


class TestMatrixProperties(PropertySuite):
    cases = CASES


# --------------------------------------- every shape against NumPy, eagerly

EXACT = [
    (kc.Orthogonal(0.7), polar(0.7)),
    (kc.SpectralNorm(1.0), clip_singular_values(1.0)),
    (kc.SpectralNorm(1.0, method="scale"), rescale(1.0)),
    (kc.SpectralNorm(1.0, method="gram"), gram(1.0, 8)),
    (kc.SpectralNorm(1.0, method="power"), power_rescale(1.0, 8)),
    (kc.LowRank(2), low_rank(2)),
]


SHAPES = [(TALL, False), (WIDE, False), (SQUARE, False), (CONV, False), (CONV, True)]


@pytest.mark.parametrize("shape, batched", SHAPES, ids=[f"{s}-batched={b}" for s, b in SHAPES])
@pytest.mark.parametrize("c, fn", EXACT, ids=[repr(e[0]) for e in EXACT])
def test_matches_numpy_on_every_shape(c, fn, shape, batched):
    c = type(c).from_config({**c.get_config(), "batched": batched})
    w = sample(shape, "normal", seed=21)
    np.testing.assert_allclose(to_np(c(tensor(w))), per_matrix(fn, batched)(w), atol=2e-5)


@pytest.mark.parametrize("c, fn", [(kc.Symmetric(), symmetric), (kc.PSD(), psd)], ids=param_id)
@pytest.mark.parametrize("shape", [(6, 6), (2, 3, 4, 4)], ids=str)
def test_square_constraints_match_numpy(c, fn, shape):
    w = sample(shape, "normal", seed=22)
    out = to_np(c(tensor(w)))
    np.testing.assert_allclose(out, per_matrix(fn, batched=True)(w), atol=2e-5)
    np.testing.assert_array_equal(out, np.swapaxes(out, -1, -2))  # exactly symmetric


# ------------------------------------------------------ feasibility by method

METHODS = ["svd", "scale", "gram"]
# Relative accuracy of a float32 largest singular value: JAX's values-only SVD
# is off by up to 3e-6 on clustered spectra (LAPACK on float64 input: 1e-9).
F32_SVD = 1e-5


@pytest.mark.parametrize("method", [*METHODS, "power"])
@pytest.mark.parametrize(
    "s",
    [
        [0.999, 0.999, 0.999, 0.5],  # tied top inside: the Gram bound says > 1
        [0.9, 0.3, 0.2, 0.1],  # well inside: the bound certifies it
        [1.0, 1.0, 1.0, 1.0],  # on the boundary
        [0.0, 0.0, 0.0, 0.0],
    ],
    ids=["tied-inside", "inside", "boundary", "zero"],
)
def test_a_weight_inside_the_ball_is_unchanged_bit_for_bit(method, s):
    w = spectrum(s).astype("float32")
    out = to_np(kc.SpectralNorm(1.0, method=method)(tensor(w)))
    if s[0] < 1:
        np.testing.assert_array_equal(out, w)
    else:  # float32 rounding may put sigma_1 a hair above 1, and "svd" clips to 1 - 4 sqrt(k) eps
        np.testing.assert_allclose(out, w, rtol=0, atol=2e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "s",
    [
        [1.00001, 1.0, 1.0, 1.0],  # just outside, tied: the Gram bound can not decide
        [1.02, 1.02, 1.02, 0.1],  # outside, tied
        [3.0, 1.0, 0.5, 0.1],  # far outside
        [1.2, 1.19, 1.18, 1.17],  # clustered
    ],
    ids=["just-outside", "tied", "far", "clustered"],
)
@pytest.mark.parametrize("iterations", [1, 8])
def test_every_method_lands_inside_the_ball(method, s, iterations):
    w = spectrum(s, seed=1)
    out = to_np(kc.SpectralNorm(1.0, method=method, iterations=iterations)(tensor(w)))
    assert sigma1(out) <= 1 + F32_SVD, sigma1(out)
    # Shrunk at most by the Gram bound's worst-case slack, k ** (1 / 2**(iterations + 2)).
    assert sigma1(out) >= 4 ** (-1 / 2 ** (iterations + 2)) * (1 - 1e-6)


def test_gram_rescales_by_the_exact_norm_when_the_bound_can_not_decide():
    w = spectrum([1.00001, 1.0, 1.0, 1.0], seed=2)
    out = to_np(kc.SpectralNorm(1.0, method="gram")(tensor(w)))
    np.testing.assert_allclose(out, w / 1.00001, atol=F32_SVD)


# ---------------------------------------------------- the power-method estimate


@pytest.mark.parametrize("shape", [TALL, WIDE, (2, 5, 3)], ids=str)
def test_power_is_exact_on_a_rank_one_matrix_after_one_step(shape):
    rng = np.random.default_rng(11)
    w = 3.0 * rng.normal(size=(*shape[:-1], 1)) * rng.normal(size=(1, shape[-1]))
    out = to_np(kc.SpectralNorm(1.0, method="power", iterations=1, batched=True)(tensor(w)))
    for got, m in zip(out.reshape(-1, *shape[-2:]), w.reshape(-1, *shape[-2:]), strict=True):
        np.testing.assert_allclose(got, m / sigma1(m), atol=1e-6)


def test_power_is_deterministic_and_keeps_a_zero_matrix():
    c = kc.SpectralNorm(0.5, method="power")
    w = tensor(sample(SQUARE, "normal", seed=12))
    np.testing.assert_array_equal(to_np(c(w)), to_np(c(w)))
    np.testing.assert_array_equal(to_np(c(tensor(np.zeros(SQUARE)))), np.zeros(SQUARE))


def test_power_may_end_above_the_bound_its_exact_twin_never_does():
    # The largest row norm (0 steps) is below sigma_1: the estimate lets the weight stay outside.
    w = spectrum([1.1, 1.0, 0.5, 0.2], seed=4).astype("float32")
    assert np.max(np.linalg.norm(w, axis=1)) < 1.0
    power = kc.SpectralNorm(1.0, method="power", iterations=0)
    np.testing.assert_array_equal(to_np(power(tensor(w))), w)
    exact = power.exact
    assert exact.get_config() == {**power.get_config(), "method": "svd"}
    assert sigma1(to_np(exact(tensor(w)))) <= 1 + F32_SVD


def test_newton_schulz_is_unconverged_on_an_ill_conditioned_kernel_and_its_twin_is_the_svd():
    # Found by kconstraints.testing: one entry 1e4 times the others, 25 steps.
    w = np.random.default_rng(0).normal(size=(4, 4)) * 1e-4
    w[0, 0] = 1.0
    assert 1e3 < np.linalg.cond(w) < 1e6
    fast = kc.Orthogonal(method="newton_schulz")
    q = to_np(fast(tensor(w)))
    assert np.max(np.abs(q.T @ q - np.eye(4))) > 0.1
    exact = fast.exact
    assert exact.get_config() == {**fast.get_config(), "method": "svd"}
    q = to_np(exact(tensor(w)))
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-5)
    assert kc.Orthogonal().exact.method == "svd"


@pytest.mark.parametrize("method", METHODS)
def test_the_exact_twin_of_a_certified_method_is_itself(method):
    c = kc.SpectralNorm(1.0, method=method)
    assert c.exact is c
    compose = kc.Compose([kc.NonNeg(), c])
    assert compose.exact is compose


def test_the_exact_twin_of_a_composition_replaces_the_estimate_inside():
    compose = kc.Compose([kc.NonNeg(), kc.SpectralNorm(2.0, method="power", iterations=3)])
    exact = compose.exact
    assert type(exact) is kc.Compose
    assert exact.constraints[0] is compose.constraints[0]
    assert exact.constraints[1].get_config() == {
        "max_value": 2.0,
        "method": "svd",
        "iterations": 3,
        "batched": False,
    }


def test_conv_kernel_bound_is_on_the_reshaped_matrix_not_the_operator():
    """The docstring's claim: ||conv|| <= sqrt(rows * cols) * ||reshaped||, and can exceed it."""
    kernel = to_np(kc.SpectralNorm(1.0)(tensor(sample(CONV, "normal", seed=4))))
    assert sigma1(kernel.reshape(-1, CONV[-1])) <= 1 + 1e-6
    # The convolution's matrix, one basis image at a time (stride 1, "same" padding).
    n = 6 * 6 * CONV[2]
    basis = np.eye(n, dtype="float32").reshape(n, 6, 6, CONV[2])
    images = keras.ops.conv(tensor(basis), tensor(kernel), padding="same")
    operator = to_np(images).reshape(n, -1)
    assert 1.0 < sigma1(operator) <= 3.0 * (1 + 1e-6)


ALL = [
    kc.Orthogonal(),
    kc.Orthogonal(method="newton_schulz"),
    *(kc.SpectralNorm(0.5, method=m) for m in [*METHODS, "power"]),
    kc.LowRank(2),
    kc.Symmetric(),
    kc.PSD(),
]


@pytest.mark.parametrize("c", ALL, ids=repr)
def test_takes_a_keras_variable_and_its_value(c):
    """The optimizer passes the variable; users (and the demo) pass `variable.value`."""
    w = sample((4, 4), "normal", seed=7).astype("float32")
    want = to_np(c(tensor(w)))
    variable = keras.Variable(w)
    np.testing.assert_allclose(to_np(c(variable)), want, atol=1e-6)
    np.testing.assert_allclose(to_np(c(variable.value)), want, atol=1e-6)


# ----------------------------------------------------------- SingularValueBand

BANDS = [(0.0, 0.5), (0.3, 1.5), (1.2, None), (0.7, 0.7)]


@pytest.mark.parametrize("shape, batched", SHAPES, ids=[f"{s}-batched={b}" for s, b in SHAPES])
@pytest.mark.parametrize("low, high", BANDS, ids=str)
def test_singular_value_band_matches_numpy_on_every_shape(low, high, shape, batched):
    w = sample(shape, "normal", seed=31)
    out = to_np(kc.SingularValueBand(low, high, batched=batched)(tensor(w)))
    want = per_matrix(singular_value_band(low, high), batched)(w)
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_the_band_from_zero_is_spectral_norm_and_a_point_band_is_orthogonal():
    w = tensor(sample(CONV, "normal", seed=32))
    np.testing.assert_allclose(
        to_np(kc.SingularValueBand(0.0, 0.5)(w)), to_np(kc.SpectralNorm(0.5)(w)), atol=1e-6
    )
    np.testing.assert_allclose(
        to_np(kc.SingularValueBand(2.0, 2.0)(w)), to_np(kc.Orthogonal(2.0)(w)), atol=1e-5
    )
    np.testing.assert_allclose(
        to_np(kc.SingularValueBand(2.0, 2.0)(w)), per_matrix(polar(2.0))(to_np(w)), atol=1e-5
    )


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)], ids=str)
def test_zero_singular_values_rise_to_the_floor(shape):
    """Rank 2 of 4: the two zero singular values come out at min_value, the others clipped."""
    rng = np.random.default_rng(33)
    w = rng.normal(size=(shape[0], 2)) @ rng.normal(size=(2, shape[1]))
    s_in = np.linalg.svd(w, compute_uv=False)
    out = to_np(kc.SingularValueBand(0.5, 3.0)(tensor(w)))
    s_out = np.linalg.svd(out, compute_uv=False)
    np.testing.assert_allclose(np.sort(s_out), np.sort(np.clip(s_in, 0.5, 3.0)), atol=1e-5)
    # A nearest point: the distance is that of the clipped spectrum (von Neumann).
    want = np.sqrt(np.sum((s_in - np.clip(s_in, 0.5, 3.0)) ** 2))
    np.testing.assert_allclose(np.linalg.norm(out - w), want, rtol=1e-5)


def test_a_zero_matrix_goes_to_the_floor_sphere():
    out = to_np(kc.SingularValueBand(0.5, 1.0)(tensor(np.zeros((5, 3)))))
    np.testing.assert_allclose(np.linalg.svd(out, compute_uv=False), 0.5, atol=1e-6)


@pytest.mark.parametrize(
    "c, w",
    [
        (kc.SingularValueBand(0.5, 2.0), sample((6, 4), "normal", seed=34)),
        (kc.EigenBand(-1.0, 1.0), np.diag([-1.0, 0.25, 1.0]) + 0.0),
        (kc.PSD(), np.eye(3)),
        (kc.Skew(), np.array([[0.0, 0.3], [-0.3, 0.0]])),
    ],
    ids=repr,
)
def test_a_weight_in_the_set_is_unchanged_bit_for_bit(c, w):
    if isinstance(c, kc.SingularValueBand):  # rescale into the band first
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        w = (u * np.linspace(0.6, 1.9, s.size)) @ vt
    w32 = w.astype("float32")
    np.testing.assert_array_equal(to_np(c(tensor(w32))), w32)


# -------------------------------------------------------------- EigenBand, PSD


@pytest.mark.parametrize("low, high", [(0.2, None), (None, -0.1), (-0.3, 0.4)], ids=str)
@pytest.mark.parametrize("shape", [(6, 6), (2, 3, 4, 4)], ids=str)
def test_eigen_band_matches_numpy_and_is_exactly_symmetric(low, high, shape):
    w = sample(shape, "normal", seed=35)
    out = to_np(kc.EigenBand(low, high)(tensor(w)))
    np.testing.assert_allclose(out, per_matrix(eigen_band(low, high), batched=True)(w), atol=2e-5)
    np.testing.assert_array_equal(out, np.swapaxes(out, -1, -2))
    lam = np.linalg.eigvalsh(out)
    assert lam.min() >= (-np.inf if low is None else low) - 1e-5
    assert lam.max() <= (np.inf if high is None else high) + 1e-5


def test_psd_is_the_band_from_zero_and_keeps_its_empty_config():
    w = tensor(sample((3, 5, 5), "normal", seed=36))
    assert isinstance(kc.PSD(), kc.EigenBand)
    assert kc.PSD().get_config() == {} and repr(kc.PSD()) == "PSD()"
    assert type(kc.deserialize(kc.serialize(kc.PSD()))) is kc.PSD
    np.testing.assert_array_equal(to_np(kc.PSD()(w)), to_np(kc.EigenBand(min_value=0.0)(w)))
    np.testing.assert_allclose(to_np(kc.PSD()(w)), per_matrix(psd, batched=True)(to_np(w)), 0, 2e-5)


def test_a_point_band_gives_the_scaled_identity():
    out = to_np(kc.EigenBand(0.5, 0.5)(tensor(sample((4, 4), "normal", seed=37))))
    np.testing.assert_allclose(out, 0.5 * np.eye(4), atol=1e-6)


# ------------------------------------------------------------------- Skew


@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 4, 4)], ids=str)
def test_skew_matches_numpy_and_is_exactly_skew(shape):
    w = sample(shape, "normal", seed=38)
    out = to_np(kc.Skew()(tensor(w)))
    np.testing.assert_allclose(out, per_matrix(skew, batched=True)(w), atol=1e-6)
    np.testing.assert_array_equal(out, -np.swapaxes(out, -1, -2))
    assert not np.diagonal(out, axis1=-2, axis2=-1).any()


def test_skew_and_symmetric_parts_add_up_to_the_weight():
    w = sample((6, 6), "normal", seed=39)
    parts = to_np(kc.Skew()(tensor(w))) + to_np(kc.Symmetric()(tensor(w)))
    np.testing.assert_allclose(parts, w.astype("float32"), atol=1e-6)


# ------------------------------------------------------------------ Penalty

PENALIZED = [
    (kc.SingularValueBand(0.5, 1.0), per_matrix(singular_value_band(0.5, 1.0))),
    (kc.EigenBand(-0.2, 0.3), per_matrix(eigen_band(-0.2, 0.3))),
    (kc.Skew(), skew),
]


@pytest.mark.parametrize("c, ref", PENALIZED, ids=param_id)
def test_penalty_is_the_squared_distance_and_its_gradient(c, ref):
    w = sample((5, 5), "normal", seed=40)
    with float64_enabled():
        value = float(to_np(kc.Penalty(c, strength=0.3)(tensor(w, "float64"))))
        grad = to_np(gradient(kc.Penalty(c, strength=0.3), tensor(w, "float64")))
    np.testing.assert_allclose(value, 0.3 * np.sum((w - ref(w)) ** 2), rtol=1e-10)
    np.testing.assert_allclose(grad, 0.6 * (w - ref(w)), rtol=0, atol=1e-10)
    assert np.abs(grad).max() > 0.1


# ------------------------------------------------------ compiled fits, saving


def _band_model(constrained):
    reset_compiler()  # each model compiled afresh: the counts are comparable
    keras.utils.set_random_seed(0)
    constraints = [
        kc.SingularValueBand(0.5, 1.5),
        kc.EigenBand(0.1, 2.0),
        kc.Skew(),
        kc.SingularValueBand(0.2, None),
    ]
    layers = [
        keras.layers.Dense(
            6 if i < 3 else 1,
            kernel_constraint=c if constrained else None,
            kernel_regularizer=kc.Penalty(kc.Skew(), 0.1) if constrained and i == 0 else None,
        )
        for i, c in enumerate(constraints)
    ]
    model = keras.Sequential([keras.Input((6,)), *layers])
    model.compile("sgd", "mse", jit_compile=True)
    with graph_breaks() as breaks:
        model.fit(*data((6,)), epochs=1, verbose=0)
    assert model.jit_compile
    return model, breaks[0]


@pytest.mark.long_on("torch")
def test_a_compiled_fit_adds_no_graph_break_and_the_model_loads_in_safe_mode(tmp_path):
    # Keras's own torch train step breaks the graph (loss.backward(), the
    # optimizer): the constraints must add none to that count.
    model, breaks = _band_model(constrained=True)
    assert breaks == _band_model(constrained=False)[1]
    path = tmp_path / "bands.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(b.kernel_constraint) is type(a.kernel_constraint)
        assert b.kernel_constraint.get_config() == a.kernel_constraint.get_config()
    x = data((6,), seed=8)[0]
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=1e-6, atol=1e-6)
    kernels = [to_np(layer.kernel) for layer in model.layers]
    assert np.linalg.svd(kernels[0], compute_uv=False).min() >= 0.5 - 1e-5
    assert np.linalg.eigvalsh(kernels[1]).min() >= 0.1 - 1e-5
    np.testing.assert_array_equal(kernels[2], -kernels[2].T)


def matrix_model(conv_methods, dense_methods):
    """Conv2D and Dense kernels, each under SpectralNorm with one of the methods given."""
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 2))]
    layers += [
        keras.layers.Conv2D(4, 3, kernel_constraint=kc.SpectralNorm(1.0, method=m))
        for m in conv_methods
    ]
    layers.append(keras.layers.Flatten())
    layers += [
        keras.layers.Dense(5, kernel_constraint=kc.SpectralNorm(0.5, method=m))
        for m in dense_methods
    ]
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


@torch_only
@pytest.mark.long_on("torch")
@pytest.mark.parametrize(
    "conv_methods, dense_methods",
    [(["gram", "power"], ["svd", "scale"]), (["svd", "scale"], ["gram", "power"])],
    ids=["conv-gram-power", "dense-gram-power"],
)
def test_a_compiled_train_step_breaks_only_where_keras_does(conv_methods, dense_methods):
    """Keras's torch train_step breaks the graph at `loss.backward()`; the constraints add none.

    A constraint can compile alone with no break and still break inside the
    optimizer's update (Keras's `ops.max` on torch, for one, reads
    `result.values`, which Dynamo can not trace there). The reasons are
    compared, not the counts: Keras's own break repeats once per recompile.
    """
    from torch._dynamo.utils import counters

    model = matrix_model(conv_methods, dense_methods)
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype("float32")
    before = dict(counters["graph_break"])
    model.fit(x, np.ones((16, 1), "float32"), batch_size=8, epochs=1, verbose=0)
    met = {r for r, n in counters["graph_break"].items() if n > before.get(r, 0)}
    reasons = [r.splitlines()[0] for r in met]
    assert reasons, "no graph break at all: Keras's own at loss.backward() was expected"
    assert set(reasons) == {"Unsupported Tensor.backward() call"}, reasons


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Orthogonal(scale=0), "Orthogonal.*scale.*0"),
        (lambda: kc.Orthogonal(method="qr"), "Orthogonal.*method.*'qr'"),
        (lambda: kc.Orthogonal(iterations=0), "Orthogonal.*iterations.*0"),
        (lambda: kc.Orthogonal(iterations=2.5), "Orthogonal.*iterations.*2.5"),
        (lambda: kc.SpectralNorm(max_value=-1), "SpectralNorm.*max_value.*-1"),
        (lambda: kc.SpectralNorm(method="lanczos"), "SpectralNorm.*method.*'lanczos'"),
        (lambda: kc.SpectralNorm(iterations=True), "SpectralNorm.*iterations.*True"),
        (lambda: kc.SpectralNorm(batched=1), "SpectralNorm.*batched.*1"),
        (lambda: kc.LowRank(rank=0), "LowRank.*rank.*0"),
        (lambda: kc.LowRank(rank=None), "LowRank.*rank.*None"),
        (lambda: kc.SingularValueBand(-0.1, 1.0), r"SingularValueBand.*min_value.*-0\.1"),
        (lambda: kc.SingularValueBand(0.0, -1.0), r"SingularValueBand.*max_value.*-1"),
        (lambda: kc.SingularValueBand(2.0, 1.0), r"SingularValueBand.*min_value.*<=.*2\.0.*1\.0"),
        (lambda: kc.SingularValueBand(0.0, None), r"SingularValueBand.*max_value.*None.*> 0"),
        (lambda: kc.SingularValueBand(0.5, float("inf")), r"SingularValueBand.*max_value.*inf"),
        (lambda: kc.SingularValueBand(batched="yes"), r"SingularValueBand.*batched.*'yes'"),
        (lambda: kc.SingularValueBand("1", 2.0), r"SingularValueBand.*min_value.*'1'"),
        (lambda: kc.EigenBand(), r"EigenBand.*at least one of `min_value` and `max_value`"),
        (lambda: kc.EigenBand(1.0, -1.0), r"EigenBand.*min_value.*<=.*1\.0.*-1\.0"),
        (lambda: kc.EigenBand(float("nan")), r"EigenBand.*min_value.*nan"),
        (lambda: kc.EigenBand(max_value=[1.0]), r"EigenBand.*max_value.*\[1\.0\]"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "c", [kc.Symmetric(), kc.PSD(), kc.EigenBand(0.0, 1.0), kc.Skew()], ids=repr
)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (4,)], ids=str)
def test_non_square_input_names_the_shape(c, shape):
    name = type(c).__name__
    with pytest.raises(ValueError, match=rf"{name}.*square.*{re_shape(shape)}"):
        c(tensor(np.ones(shape)))


@pytest.mark.parametrize(
    "c", [kc.Orthogonal(), kc.SpectralNorm(), kc.LowRank(), kc.SingularValueBand()], ids=repr
)
def test_a_vector_is_not_a_matrix(c):
    with pytest.raises(ValueError, match=rf"{type(c).__name__}.*matri.*\(5,\)"):
        c(tensor(np.ones(5)))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("rank", [5, 9])
def test_low_rank_at_full_rank_is_the_identity(rank):
    w = sample(TALL, "normal", seed=5).astype("float32")
    np.testing.assert_array_equal(to_np(kc.LowRank(rank)(tensor(w))), w)


def test_newton_schulz_on_a_wide_matrix_gives_orthonormal_rows():
    w = sample((4, 9), "normal", seed=6)
    q = to_np(kc.Orthogonal(method="newton_schulz")(tensor(w)))
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=2e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "make",
    [lambda v: kc.SpectralNorm(v), lambda v: kc.SingularValueBand(0.5 * v, v)],
    ids=["SpectralNorm", "SingularValueBand"],
)
def test_sigma_1_meets_max_value_to_the_rounding_of_the_dtype(make, dtype):
    # The recomposition U min(S, c) V^T rounds by up to 30 ulps at 128 x 128
    # (TensorFlow): the bound must hold to a few ulps of the weight's dtype.
    limit = 1 + 16 * (2.0**-52 if dtype == "float64" else 2.0**-23)
    rng = np.random.default_rng(0)
    with float64_enabled():
        for shape in [(6, 4), (64, 32), (128, 128), (3, 3, 8, 16)]:
            for max_value in (1.0, 0.7, 2.5):
                w = tensor(rng.normal(size=shape) * 3, dtype)
                out = make(max_value)(w)
                assert keras.backend.standardize_dtype(out.dtype) == dtype
                s = np.linalg.svd(to_np(out).reshape(-1, shape[-1]), compute_uv=False)
                assert s[0] <= max_value * limit, (shape, max_value, s[0] / max_value - 1)
