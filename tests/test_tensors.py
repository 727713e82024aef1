"""_tensors.py: the shared tensor helpers, on every backend, in every dtype, against NumPy.

Each helper keeps its input's dtype where a plain `keras.ops` call would
not (float64 promotion, see `_backend.py`). The dtype-keeping paths run on
every backend here, including `cumsum_last`'s scan, which only torch's
float64 `cumsum` takes on its own: a cumsum that changes the dtype is
substituted for the backend's.
"""

import keras
import numpy as np
import pytest

from kconstraints import _tensors
from tests.backend import float64_enabled
from tests.helpers import FLOAT_DTYPES, dtype_of, sample, tensor, to_np, tol

# float64 in float32 (or lower) would be off by about EPS["float32"]: far above this.
F64 = 1e-13


def rounded(w, dtype):
    """`w` as the helpers see it: rounded to `dtype`, back in float64."""
    with float64_enabled():
        return to_np(tensor(w, dtype))


@pytest.mark.parametrize(
    "dtype, want",
    [("float16", "float32"), ("bfloat16", "float32"), ("float32", "float32"), ("float64",) * 2],
)
def test_half_precision_is_projected_in_float32(dtype, want):
    assert _tensors.compute_dtype(dtype) == want
    with float64_enabled():
        assert dtype_of(_tensors.upcast(tensor(np.ones(3), dtype))) == want


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_clamp_keeps_the_dtype_and_takes_numbers_tensors_or_none(dtype):
    w = sample((5, 4), "normal", seed=1)
    low, high = np.linspace(-1.0, 0.0, 4), 0.5
    with float64_enabled():
        x = tensor(w, dtype)
        both = _tensors.clamp(x, tensor(low, dtype), high)
        below = _tensors.clamp(x, high=high)
        unbounded = _tensors.clamp(x)
        for out in (both, below, unbounded):
            assert dtype_of(out) == dtype
        got = [to_np(out) for out in (both, below, unbounded)]
    w = rounded(w, dtype)
    # Only comparisons and selection: exact in every dtype.
    np.testing.assert_array_equal(got[0], np.clip(w, rounded(low, dtype), high))
    np.testing.assert_array_equal(got[1], np.minimum(w, high))
    np.testing.assert_array_equal(got[2], w)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("axes", [(0,), (0, 1), (1, 2)], ids=str)
def test_l2_norms_and_mean_keep_the_dtype_and_broadcast(dtype, axes):
    w = sample((3, 4, 5), "normal", seed=2)
    with float64_enabled():
        x = tensor(w, dtype)
        norms, mean = _tensors.l2_norms(x, axes), _tensors.mean(x, axes)
        assert dtype_of(norms) == dtype_of(mean) == dtype
        got_norms, got_mean = to_np(norms), to_np(mean)
    w = rounded(w, dtype)
    want_norms = np.sqrt(np.sum(w**2, axis=axes, keepdims=True))
    want_mean = np.mean(w, axis=axes, keepdims=True)
    n = int(np.prod([w.shape[a] for a in axes]))  # a rounding per term, at most
    np.testing.assert_allclose(got_norms, want_norms, rtol=0, atol=tol(dtype, want_norms.max(), n))
    np.testing.assert_allclose(got_mean, want_mean, rtol=0, atol=tol(dtype, np.abs(w).max(), n))


def test_a_float64_mean_is_reduced_in_float64():
    # Around 1e8 the float32 spacing is 8: a float32 reduction loses the offsets.
    w = 1e8 + np.arange(12.0).reshape(3, 4) / 7
    with float64_enabled():
        got = to_np(_tensors.mean(tensor(w, "float64"), (1,)))
    np.testing.assert_allclose(got, np.mean(w, axis=1, keepdims=True), rtol=F64, atol=0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_scalar_and_safe_divisor_keep_the_dtype(dtype):
    with float64_enabled():
        x = tensor([0.0, 2.0, 0.0, 0.5], dtype)
        one, divisor = _tensors.scalar(1.0, x), _tensors.safe_divisor(x)
        assert dtype_of(one) == dtype_of(divisor) == dtype
        assert tuple(one.shape) == ()
        got_one, got_divisor = to_np(one), to_np(divisor)
    assert got_one == 1.0
    np.testing.assert_array_equal(got_divisor, [1.0, 2.0, 1.0, 0.5])


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2), (1, 2), (0, 1, 2)], ids=str)
def test_slices_as_rows_flattens_each_slice_and_restores_the_layout(axes):
    w = sample((2, 3, 4), "normal", seed=3)
    rows, restore = _tensors.slices_as_rows(tensor(w), axes)
    kept = [a for a in range(3) if a not in axes]
    w = rounded(w, "float32")
    want = np.transpose(w, kept + list(axes)).reshape(-1, int(np.prod([w.shape[a] for a in axes])))
    np.testing.assert_array_equal(to_np(rows), want)
    np.testing.assert_array_equal(to_np(restore(rows)), w)


def promoting_cumsum(cumsum):
    """The backend's cumsum, with its result cast to another dtype: what forces the scan."""

    def fn(x, axis=None, dtype=None):
        other = "float32" if dtype_of(x) == "float64" else "float64"
        return keras.ops.cast(cumsum(x, axis=axis), other)

    return fn


@pytest.mark.parametrize("length", [1, 7, 33])  # no pass, 3 passes, just above 2**5
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("path", ["cumsum", "scan"])
def test_cumsum_last_keeps_the_dtype_on_both_paths(monkeypatch, path, dtype, length):
    w = sample((3, length), "normal", seed=length)
    with float64_enabled():
        if path == "scan":
            monkeypatch.setattr(_tensors.ops, "cumsum", promoting_cumsum(_tensors.ops.cumsum))
        x = tensor(w, dtype)
        promoted = dtype_of(_tensors.ops.cumsum(x, axis=-1)) != dtype
        assert promoted or path == "cumsum", "the scan was not forced"
        out = _tensors.cumsum_last(x)
        assert dtype_of(out) == dtype
        got = to_np(out)
    want = np.cumsum(rounded(w, dtype), axis=-1)
    # float64: the sums are float64 ones (in float32 they would be ~1e-7 off).
    scale = np.abs(want).max()
    atol = F64 * length if dtype == "float64" else tol(dtype, scale, 2 * length)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_constant_is_read_in_the_weight_dtype_float64_from_the_array(dtype):
    array = np.array([[1 / 3, 0.1], [-2.0, 1e-8]])
    constant = _tensors.Constant(array)
    assert constant.shape == (2, 2)
    with float64_enabled():
        out = constant.as_dtype_of(tensor(np.zeros(2), dtype))
        assert dtype_of(out) == dtype
        got = to_np(out)
    if dtype == "float64":  # from the float64 array, not from the float32 copy
        np.testing.assert_array_equal(got, array)
    else:
        want = to_np(keras.ops.cast(keras.ops.convert_to_tensor(array, "float32"), dtype))
        np.testing.assert_array_equal(got, want)
        assert np.abs(got - array).max() > 0  # rounded: the float64 check above can fail


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_a_zero_dimensional_constant_is_a_number(dtype):
    constant = _tensors.Constant(np.array(0.1))
    assert constant.shape == ()
    with float64_enabled():
        out = constant.as_dtype_of(tensor(np.zeros(2), dtype))
        assert dtype_of(out) == dtype and tuple(out.shape) == ()
        got = to_np(out)
    # A Python float, converted in the weight's dtype: 0.1 exactly in float64.
    assert got == rounded(0.1, dtype)
    assert (got == 0.1) == (dtype == "float64")
