"""Norm constraints: each slice along `axis` is one vector, projected as a whole.

`axis` follows `keras.constraints`: it names the axes a norm is taken over.
For a Dense kernel of shape `(input_dim, units)`, `axis=0` constrains the
incoming weight vector of each unit. For a Conv2D kernel of shape
`(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]` constrains each
filter. `axis=None` treats the whole tensor as one vector; negative axes work.
"""

from __future__ import annotations

import math

from keras import ops
from keras.backend import standardize_dtype

from kconstraints._base import (
    Constraint,
    check_axis,
    check_number,
    clamp,
    l2_norms,
    register,
    resolve_axis,
    safe_divisor,
    upcast,
)


class _NormConstraint(Constraint):
    """Shared: rescale each slice by `factor(norms)`, computed in float32 or wider."""

    def _norms(self, w):
        x = upcast(w)
        axes = resolve_axis(type(self).__name__, self.axis, x.shape)
        return x, l2_norms(x, axes)


@register
class MaxNorm(_NormConstraint):
    """Bounded norm: the projection onto `{w : ||w_slice||_2 <= max_value}`.

    `P(w) = w * min(1, max_value / ||w||)` per slice. Unlike
    `keras.constraints.MaxNorm`, a slice inside the ball is returned
    unchanged (Keras divides by `norm + 1e-7`), and float16/bfloat16 norms are
    computed in float32 (Keras turns the float16 column [300, 400] into
    zeros under `MaxNorm(1000)`, because 300**2 overflows float16).

    Args:
        max_value: the largest allowed Euclidean norm of a slice (>= 0).
        axis: the axes a norm is taken over (see the module docstring):
            `0` for a Dense kernel, `[0, 1, 2]` for a Conv2D kernel.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.3], [4.0, 0.4]])
    >>> keras.ops.convert_to_numpy(kconstraints.MaxNorm(1.0, axis=0)(w)).astype(float).round(3).tolist()
    [[0.6, 0.3], [0.8, 0.4]]
    """

    def __init__(self, max_value=2, axis=0):
        name = type(self).__name__
        check_number(name, "max_value", max_value, low=0)
        self.max_value = max_value
        self.axis = check_axis(name, axis)

    def project(self, w):
        x, norms = self._norms(w)
        scale = ops.where(
            norms > self.max_value, self.max_value / safe_divisor(norms), ops.ones_like(norms)
        )
        return x * ops.cast(scale, x.dtype)


@register
class UnitNorm(_NormConstraint):
    """Unit norm: the projection onto the sphere `{w : ||w_slice||_2 = 1}`.

    `P(w) = w / ||w||` per slice. An all-zero slice has no nearest point on
    the sphere (every point is as near); it is returned as zeros, never NaN.

    Args:
        axis: the axes a norm is taken over (see the module docstring):
            `0` for a Dense kernel, `[0, 1, 2]` for a Conv2D kernel.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0], [4.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.UnitNorm(axis=0)(w)).astype(float).round(3).tolist()
    [[0.6], [0.8]]
    """

    def __init__(self, axis=0):
        self.axis = check_axis(type(self).__name__, axis)

    def project(self, w):
        x, norms = self._norms(w)
        return x / safe_divisor(norms)


@register
class MinMaxNorm(_NormConstraint):
    """Norm in a range: each slice's norm is moved into `[min_value, max_value]`.

    With `rate=1` this is the projection onto the shell
    `{w : min_value <= ||w_slice||_2 <= max_value}`:
    `P(w) = w * clip(||w||, min_value, max_value) / ||w||`. With `rate < 1`
    the norm moves only that fraction of the way, as in Keras
    (`norm' = rate * clip(norm) + (1 - rate) * norm`), which is not a
    projection. An all-zero slice has no direction to scale and stays zero.

    Args:
        min_value: the smallest allowed norm (>= 0).
        max_value: the largest allowed norm (>= `min_value`).
        rate: the fraction of the way to move, in (0, 1].
        axis: the axes a norm is taken over (see the module docstring):
            `0` for a Dense kernel, `[0, 1, 2]` for a Conv2D kernel.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.3, 30.0], [0.4, 40.0]])
    >>> c = kconstraints.MinMaxNorm(min_value=1.0, max_value=2.0, axis=0)
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.6, 1.2], [0.8, 1.6]]
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        name = type(self).__name__
        check_number(name, "min_value", min_value, low=0)
        check_number(name, "max_value", max_value, low=0)
        if max_value < min_value:
            raise ValueError(
                f"{name}: `min_value` must be <= `max_value`, got "
                f"min_value={min_value!r}, max_value={max_value!r}."
            )
        check_number(name, "rate", rate, low=0, high=1, low_open=True)
        self.min_value = min_value
        self.max_value = max_value
        self.rate = rate
        self.axis = check_axis(name, axis)

    def project(self, w):
        x, norms = self._norms(w)
        target = clamp(norms, self.min_value, self.max_value)
        if self.rate != 1:
            target = self.rate * target + (1 - self.rate) * norms
        scale = ops.where(norms > 0, target / safe_divisor(norms), ops.ones_like(norms))
        return x * ops.cast(scale, x.dtype)


# ------------------------------------------------------- simplex and L1 ball


def to_rows(owner, axis, x):
    """Each slice along `axis` as one row of a `(slices, n)` matrix, and the inverse.

    The axes of `axis` move to the end and are flattened, so a sort or a
    cumulative sum along the last axis treats each slice as one vector.
    """
    axes = resolve_axis(owner, axis, x.shape)
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
    if standardize_dtype(out.dtype) == standardize_dtype(x.dtype):
        return out
    # Keras 3.15's torch cumsum runs float64 in float32 (its result_type maps
    # float64 to float32). The doubling scan of Hillis & Steele (1986) uses
    # only `+` and concatenation, which keep float64: log2(n) passes.
    shift = 1
    while shift < x.shape[-1]:
        x = x + ops.concatenate([ops.zeros_like(x[..., :shift]), x[..., :-shift]], axis=-1)
        shift *= 2
    return x


def simplex_threshold(v, total):
    """The shift `theta` with `sum(max(v - theta, 0)) = total` for each row of `v`.

    Sort-based, O(n log n) a row (Held, Wolfe & Crowder 1974; Duchi, Shalev-
    Shwartz, Singer & Chandra 2008, "Efficient projections onto the l1-ball").
    With `u` sorted in decreasing order and `s_j = u_1 + ... + u_j`,
    `theta = max_j (s_j - total) / j`: every top-j partial sum gives a lower
    bound of theta and the support size attains it. Taking the maximum needs
    no search for the support, so ties and rounding can not pick a wrong index.
    """
    n = v.shape[-1]
    sorted_desc = ops.flip(ops.sort(v, axis=-1), axis=-1)
    partial = cumsum_last(sorted_desc)
    counts = ops.arange(1, n + 1, dtype=v.dtype)
    return ops.amax((partial - total) / counts, axis=-1, keepdims=True)


@register
class Simplex(Constraint):
    """Simplex: the projection onto `{w : w >= 0, sum(w_slice) = total}`.

    `P(w) = max(w - theta, 0)` per slice, where the scalar `theta` solves
    `sum(max(w - theta, 0)) = total`; it is found exactly by one sort of the
    slice, O(n log n), and is correct on ties, zeros and feasible slices. An
    all-zero slice becomes the uniform `total / n`. Sums are taken in float32
    for float16/bfloat16 weights.

    Args:
        total: the sum of every slice (>= 0); `total=1` gives mixture or
            attention weights.
        axis: the axes that form a slice (see the module docstring): for a
            Dense kernel of shape `(input_dim, units)`, `axis=0` makes the
            incoming weights of each unit a convex combination and `axis=-1`
            does it for the outgoing weights of each input; for a Conv2D
            kernel `(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]`
            makes each filter sum to `total`. `None` is the whole tensor.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.2, 3.0], [0.5, 0.0], [0.9, -1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Simplex(axis=0)(w)).astype(float).round(3).tolist()
    [[0.0, 1.0], [0.3, 0.0], [0.7, 0.0]]
    """

    def __init__(self, total=1.0, axis=0):
        name = type(self).__name__
        check_number(name, "total", total, low=0)
        self.total = total
        self.axis = check_axis(name, axis)

    def project(self, w):
        rows, restore = to_rows(type(self).__name__, self.axis, upcast(w))
        shifted = rows - simplex_threshold(rows, self.total)
        return restore(ops.where(shifted < 0, ops.zeros_like(shifted), shifted))


@register
class L1Ball(Constraint):
    """L1 ball: the projection onto `{w : ||w_slice||_1 <= radius}`.

    A slice inside the ball is returned unchanged. Outside,
    `P(w) = sign(w) * max(|w| - theta, 0)`: the soft threshold whose `theta > 0`
    makes `||P(w)||_1 = radius`, i.e. the simplex projection of `|w|`
    (Duchi et al. 2008), found exactly by one sort, O(n log n) a slice. The
    result is sparse: entries below `theta` in magnitude become 0.

    Args:
        radius: the largest allowed L1 norm of a slice (>= 0).
        axis: the axes that form a slice (see the module docstring): `0`
            bounds the incoming weights of each unit of a Dense kernel
            `(input_dim, units)`, `[0, 1, 2]` each filter of a Conv2D kernel
            `(rows, cols, in_channels, filters)`; `None` is the whole tensor.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.1], [-1.0, 0.2], [0.5, -0.3]])
    >>> keras.ops.convert_to_numpy(kconstraints.L1Ball(1.0, axis=0)(w)).astype(float).round(3).tolist()
    [[1.0, 0.1], [0.0, 0.2], [0.0, -0.3]]
    """

    def __init__(self, radius=1.0, axis=0):
        name = type(self).__name__
        check_number(name, "radius", radius, low=0)
        self.radius = radius
        self.axis = check_axis(name, axis)

    def project(self, w):
        rows, restore = to_rows(type(self).__name__, self.axis, upcast(w))
        magnitude = ops.abs(rows)
        theta = simplex_threshold(magnitude, self.radius)
        # theta <= 0 exactly when the slice is inside the ball: keep it bit for bit.
        shrunk = magnitude - theta
        shrunk = ops.where(shrunk > 0, ops.sign(rows) * shrunk, ops.zeros_like(shrunk))
        return restore(ops.where(theta > 0, shrunk, rows))
