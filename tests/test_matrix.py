"""matrix.py: Orthogonal, SpectralNorm, Symmetric, PSD, LowRank against float64 NumPy SVD/eigh."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints._linalg import gram_upper, power_estimate
from tests.backend import float64_enabled
from tests.helpers import param_id, sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import (
    clip_singular_values,
    gram,
    low_rank,
    per_matrix,
    polar,
    power_rescale,
    psd,
    rescale,
    sigma1,
    symmetric,
)

TALL, WIDE, SQUARE, CONV = (8, 5), (5, 8), (6, 6), (3, 3, 2, 4)


# Where singular values tie, the polar factor and the truncated SVD are not
# unique: "ties" inputs (few distinct values, often singular) are left out.
NO_TIES = ("normal", "large")

CASES = [
    Case(kc.Orthogonal(), TALL, per_matrix(polar()), convex=False, kinds=NO_TIES),
    Case(
        kc.Orthogonal(2.0, batched=True),
        (2, 4, 7),
        per_matrix(polar(2.0), batched=True),
        convex=False,
        kinds=NO_TIES,
    ),
    Case(
        kc.Orthogonal(method="newton_schulz", iterations=30),
        CONV,
        per_matrix(polar()),
        convex=False,
        kinds=NO_TIES,
    ),
    Case(kc.SpectralNorm(), TALL, per_matrix(clip_singular_values(1.0))),
    Case(kc.SpectralNorm(0.5), CONV, per_matrix(clip_singular_values(0.5))),
    Case(kc.SpectralNorm(1.0, method="scale"), WIDE, per_matrix(rescale(1.0)), convex=False),
    Case(kc.SpectralNorm(1.5, method="gram"), SQUARE, per_matrix(gram(1.5, 8)), convex=False),
    Case(
        kc.SpectralNorm(1.0, method="power"),
        WIDE,
        per_matrix(power_rescale(1.0, 8)),
        convex=False,
    ),
    Case(
        kc.SpectralNorm(0.5, method="power", iterations=3, batched=True),
        (2, 6, 4),
        per_matrix(power_rescale(0.5, 3), batched=True),
        convex=False,
    ),
    Case(
        kc.SpectralNorm(1.0, method="gram", iterations=2, batched=True),
        (3, 5, 4),
        per_matrix(gram(1.0, 2), batched=True),
        convex=False,
    ),
    Case(kc.Symmetric(), (4, 4), per_matrix(symmetric, batched=True)),
    Case(kc.PSD(), (2, 5, 5), per_matrix(psd, batched=True)),
    Case(kc.LowRank(2), TALL, per_matrix(low_rank(2)), convex=False, kinds=NO_TIES),
    Case(kc.LowRank(3), CONV, per_matrix(low_rank(3)), convex=False, kinds=NO_TIES),
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


def spectrum(s, shape=(7, 4), seed=0):
    """A matrix of `shape` with singular values `s`."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], len(s))))
    return (u * np.asarray(s, dtype="float64")) @ v.T


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
    else:  # float32 rounding may put sigma_1 a hair above 1
        np.testing.assert_allclose(out, w, rtol=0, atol=1e-6)


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


@pytest.mark.parametrize("shape", [TALL, WIDE, (576, 64)], ids=str)
@pytest.mark.parametrize("iterations", [0, 3, 8])
def test_gram_bound_is_certified_and_tightens(shape, iterations):
    w = sample(shape, "normal", seed=3)
    with float64_enabled():
        upper, _ = gram_upper(tensor(w, "float64"), iterations)
    upper = float(to_np(upper).ravel()[0])
    k = min(shape)
    assert sigma1(w) * (1 - 1e-12) <= upper <= sigma1(w) * k ** (1 / 2 ** (iterations + 2))


# ---------------------------------------------------- the power-method estimate


@pytest.mark.parametrize("shape", [TALL, WIDE, (2, 5, 3)], ids=str)
def test_power_is_exact_on_a_rank_one_matrix_after_one_step(shape):
    rng = np.random.default_rng(11)
    w = 3.0 * rng.normal(size=(*shape[:-1], 1)) * rng.normal(size=(1, shape[-1]))
    out = to_np(kc.SpectralNorm(1.0, method="power", iterations=1, batched=True)(tensor(w)))
    for got, m in zip(out.reshape(-1, *shape[-2:]), w.reshape(-1, *shape[-2:]), strict=True):
        np.testing.assert_allclose(got, m / sigma1(m), atol=1e-6)


@pytest.mark.parametrize("iterations", [0, 2, 8])
def test_power_estimate_is_below_the_norm_and_converges(iterations):
    w = spectrum([2.0, 1.5, 0.5, 0.1], shape=(9, 4), seed=3)
    with float64_enabled():
        estimate = to_np(power_estimate(tensor(w, "float64"), iterations)).item()
        far = to_np(power_estimate(tensor(w, "float64"), 60)).item()
    assert estimate <= 2.0 * (1 + 1e-12)
    assert estimate >= np.max(np.linalg.norm(w, axis=1)) * (1 - 1e-12)  # no worse than the start
    assert far == pytest.approx(2.0, rel=1e-12)  # the gap 1.5 / 2 closes


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
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("c", [kc.Symmetric(), kc.PSD()], ids=repr)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (4,)], ids=str)
def test_non_square_input_names_the_shape(c, shape):
    name = type(c).__name__
    with pytest.raises(ValueError, match=rf"{name}.*square.*{re_shape(shape)}"):
        c(tensor(np.ones(shape)))


@pytest.mark.parametrize("c", [kc.Orthogonal(), kc.SpectralNorm(), kc.LowRank()], ids=repr)
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
