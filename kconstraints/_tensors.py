"""Tensor helpers shared by the constraints: working dtype, norms, bounds, slices as rows.

Each keeps the dtype of its input on every backend; `_backend.py` says which
plain `keras.ops` calls do not (float64 promotion) and why these are written
the way they are.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def compute_dtype(dtype) -> str:
    """The dtype a weight is projected in: float32 for float16/bfloat16, else its own."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def upcast(w):
    """`w` in its compute dtype (reductions of half-precision weights run in float32)."""
    return ops.cast(w, compute_dtype(w.dtype))


def l2_norms(x, axes):
    """The Euclidean norm over `axes`, kept as size-1 axes so it broadcasts against `x`.

    The slice is divided by its largest magnitude before squaring, as LAPACK's
    `nrm2` scales: the plain sum of squares overflows from entries of about
    1e19 in float32 (UnitNorm gave zeros there) and underflows to 0 below
    1e-19 (UnitNorm of subnormal entries gave 0). Found by
    `kconstraints.testing`'s generated inputs.
    """
    top = ops.amax(ops.abs(x), axis=axes, keepdims=True)  # not ops.max: see _backend.py
    return top * ops.sqrt(ops.sum(ops.square(x / safe_divisor(top)), axis=axes, keepdims=True))


def scalar(value, like):
    """`value` as a 0-d tensor of `like`'s dtype."""
    return ops.convert_to_tensor(value, dtype=like.dtype)


def clamp(x, low=None, high=None):
    """`min(max(x, low), high)` in `x`'s dtype; bounds are numbers or tensors (None: no bound)."""
    if low is not None:
        low = ops.convert_to_tensor(low, dtype=x.dtype)
        x = ops.where(x < low, low, x)
    if high is not None:
        high = ops.convert_to_tensor(high, dtype=x.dtype)
        x = ops.where(x > high, high, x)
    return x


def safe_divisor(x):
    """Non-negative `x` with its zeros replaced by ones: a divisor that is never 0."""
    return x + ops.cast(x == 0, x.dtype)


def mean(x, axes):
    """The mean over `axes`, kept as size-1 axes, in `x`'s own dtype."""
    count = math.prod([x.shape[a] for a in axes])
    return ops.sum(x, axis=axes, keepdims=True) / count


def slices_as_rows(x, axes):
    """Each slice over `axes` as one row of a `(slices, n)` matrix, and the inverse.

    The axes move to the end and are flattened, so a sort or a cumulative sum
    along the last axis treats each slice as one vector. `axes` is a sorted
    tuple (`_checks.resolve_axis`). Returns `(rows, restore)`, where
    `restore(rows)` puts a result of the rows' shape back in `x`'s layout.
    """
    perm = [a for a in range(len(x.shape)) if a not in axes] + list(axes)
    moved = [x.shape[a] for a in perm]
    rows = ops.reshape(ops.transpose(x, perm), (-1, math.prod([x.shape[a] for a in axes])))
    inverse = [perm.index(a) for a in range(len(perm))]

    def restore(r):
        return ops.transpose(ops.reshape(r, moved), inverse)

    return rows, restore


def cumsum_last(x):
    """Cumulative sum along the last axis, in `x`'s own dtype on every backend."""
    out = ops.cumsum(x, axis=-1)
    if keras.backend.standardize_dtype(out.dtype) == keras.backend.standardize_dtype(x.dtype):
        return out
    # The backend's cumsum changed the dtype (float64 promotion, see _backend.py).
    # The doubling scan of Hillis & Steele (1986) uses only `+` and
    # concatenation, which keep it: log2(n) passes.
    shift = 1
    while shift < x.shape[-1]:
        x = x + ops.concatenate([ops.zeros_like(x[..., :shift]), x[..., :-shift]], axis=-1)
        shift *= 2
    return x


class Constant:
    """A NumPy array that projections read as a tensor of the weight's dtype.

    The float32 tensor is made once, here, outside any trace, because
    torch.compile can not trace the conversion of a NumPy array (see
    `_backend.py`); half-precision weights get it cast, and only float64
    weights get the float64 array converted at the call. A 0-d array is kept
    as a Python float, which every backend traces as a literal.
    """

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        if array.ndim:
            self._float32 = ops.convert_to_tensor(array, dtype="float32")
        else:
            self._float32 = float(array)

    def as_dtype_of(self, x):
        """The constant as a tensor of `x`'s dtype."""
        dtype = keras.backend.standardize_dtype(x.dtype)
        if isinstance(self._float32, float):
            return ops.convert_to_tensor(self._float32, dtype=dtype)
        if dtype == "float64":
            return ops.convert_to_tensor(self.array, dtype=dtype)
        return ops.cast(self._float32, dtype)
