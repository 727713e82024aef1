"""_linalg.py: the matrix kernels (Gram bound, power and Newton-Schulz iterations, masks of
non-finite matrices, reshapes) against float64 NumPy, on every backend."""

import numpy as np
import pytest

from kconstraints import _linalg
from tests.backend import float64_enabled
from tests.helpers import dtype_of, sample, spectrum, tensor, to_np
from tests.references import per_matrix, polar, sigma1, skew, symmetric

TALL, WIDE = (8, 5), (5, 8)


@pytest.mark.parametrize("shape", [TALL, WIDE, (576, 64)], ids=str)
@pytest.mark.parametrize("iterations", [0, 3, 8])
def test_gram_bound_is_certified_and_tightens(shape, iterations):
    w = sample(shape, "normal", seed=3)
    with float64_enabled():
        upper, _ = _linalg.gram_upper(tensor(w, "float64"), iterations)
    upper = float(to_np(upper).ravel()[0])
    k = min(shape)
    assert sigma1(w) * (1 - 1e-12) <= upper <= sigma1(w) * k ** (1 / 2 ** (iterations + 2))


@pytest.mark.parametrize("shape", [TALL, WIDE], ids=str)
def test_the_gram_iterate_gives_an_estimate_from_below(shape):
    w = spectrum([2.0, 1.0, 0.5, 0.1, 0.05], shape=shape, seed=5)
    with float64_enabled():
        x = tensor(w, "float64")
        _, g = _linalg.gram_upper(x, 3)
        low = to_np(_linalg.lower_estimate(x, g)).item()
    # 2**3 power steps on a gap of 1 / 2: within (1 / 2) ** 16 of sigma_1 = 2.
    assert 2.0 * (1 - 1e-4) <= low <= 2.0 * (1 + 1e-12)


@pytest.mark.parametrize("iterations", [0, 2, 8])
def test_power_estimate_is_below_the_norm_and_converges(iterations):
    w = spectrum([2.0, 1.5, 0.5, 0.1], shape=(9, 4), seed=3)
    with float64_enabled():
        estimate = to_np(_linalg.power_estimate(tensor(w, "float64"), iterations)).item()
        far = to_np(_linalg.power_estimate(tensor(w, "float64"), 60)).item()
    assert estimate <= 2.0 * (1 + 1e-12)
    assert estimate >= np.max(np.linalg.norm(w, axis=1)) * (1 - 1e-12)  # no worse than the start
    assert far == pytest.approx(2.0, rel=1e-12)  # the gap 1.5 / 2 closes


@pytest.mark.parametrize("shape", [TALL, WIDE, (2, 4, 6)], ids=str)
def test_newton_schulz_converges_to_the_polar_factor(shape):
    # Condition number 4: 30 steps are far more than it needs.
    w = np.stack(
        [
            spectrum(np.linspace(1.0, 0.25, min(shape[-2:])), shape[-2:], seed=i)
            for i in range(int(np.prod(shape[:-2])))
        ]
    ).reshape(shape)
    with float64_enabled():
        got = to_np(_linalg.newton_schulz_polar(tensor(w, "float64"), 30))
    np.testing.assert_allclose(got, per_matrix(polar(), batched=True)(w), rtol=0, atol=1e-10)


def test_finite_only_keeps_non_finite_matrices_away_from_the_decomposition():
    w = sample((4, 3, 3), "normal", seed=6)
    w[1, 0, 2], w[3, 2, 2] = np.nan, -np.inf
    seen = []

    def doubled(m):
        seen.append(to_np(m))
        return 2.0 * m

    got = to_np(_linalg.finite_only(doubled, tensor(w)))
    assert np.all(np.isfinite(seen[0])), "a NaN or an infinity reached `fn`"
    w32 = to_np(tensor(w))
    np.testing.assert_array_equal(got[[0, 2]], 2.0 * w32[[0, 2]])
    np.testing.assert_array_equal(got[[1, 3]], w32[[1, 3]])  # NaN and inf where they were


@pytest.mark.parametrize(
    "shape, batched, want",
    [((3, 3, 2, 4), False, (18, 4)), ((3, 3, 2, 4), True, (3, 3, 2, 4)), ((5, 2), False, (5, 2))],
    ids=str,
)
@pytest.mark.parametrize("dtype, compute", [("float16", "float32"), ("float32", "float32")])
def test_as_matrices_reshapes_in_the_compute_dtype(shape, batched, want, dtype, compute):
    w = sample(shape, "normal", seed=7)
    x = _linalg.as_matrices("Owner", tensor(w, dtype), batched)
    assert tuple(x.shape) == want
    assert dtype_of(x) == compute
    np.testing.assert_array_equal(to_np(x).ravel(), to_np(tensor(w, dtype)).ravel())


def test_the_symmetric_and_skew_parts_are_exact_and_add_up():
    w = sample((2, 5, 5), "normal", seed=8)
    sym = to_np(_linalg.symmetric_part("Owner", tensor(w)))
    sk = to_np(_linalg.skew_part("Owner", tensor(w)))
    np.testing.assert_array_equal(sym, np.swapaxes(sym, -1, -2))
    np.testing.assert_array_equal(sk, -np.swapaxes(sk, -1, -2))
    np.testing.assert_allclose(sym, per_matrix(symmetric, batched=True)(w), rtol=0, atol=1e-6)
    np.testing.assert_allclose(sk, per_matrix(skew, batched=True)(w), rtol=0, atol=1e-6)
    np.testing.assert_allclose(sym + sk, to_np(tensor(w)), rtol=0, atol=1e-6)


def test_shrink_factor_is_exactly_one_inside_the_bound():
    sigma = tensor([0.0, 0.5, 1.0, 4.0])
    got = to_np(_linalg.shrink_factor(sigma, tensor(1.0)))
    np.testing.assert_array_equal(got, [1.0, 1.0, 1.0, 0.25])
