"""Elementwise constraints: each entry is projected on its own."""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from kconstraints._base import (
    Constant,
    Constraint,
    check_array,
    check_axis,
    check_number,
    clamp,
    register,
    resolve_axis,
    upcast,
)


@register
class NonNeg(Constraint):
    """Non-negative weights: the projection onto the orthant w >= 0.

    `P(w) = max(w, 0)`, entrywise. The same name and behaviour as
    `keras.constraints.NonNeg`, except that the result always keeps the
    weight's dtype (Keras returns float32 for a float64 torch weight).

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> layer = keras.layers.Dense(4, kernel_constraint=kconstraints.NonNeg())
    >>> [float(v) for v in kconstraints.NonNeg()(keras.ops.convert_to_tensor([-1.0, 2.0]))]
    [0.0, 2.0]
    """

    elementwise = True

    def project(self, w):
        return ops.where(w < 0, ops.zeros_like(w), w)


@register
class Clip(Constraint):
    """Elementwise bounds: the projection onto the box `min_value <= w <= max_value`.

    `P(w) = min(max(w, min_value), max_value)`, entrywise. This is the weight
    clipping of the WGAN critic (Arjovsky et al. 2017, arXiv:1701.07875,
    Algorithm 1): `Clip(-c, c)` after every step. It clips the *weights*;
    the optimizer's `clipvalue` clips the *gradients*, which is another thing.

    Args:
        min_value: lower bound, a scalar or an array broadcastable to the
            weight's shape (per-entry bounds). `None` means no lower bound.
        max_value: upper bound, likewise. `None` means no upper bound.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> clip = kconstraints.Clip(-0.01, 0.01)
    >>> [round(float(v), 4) for v in clip(keras.ops.convert_to_tensor([-1.0, 0.005, 3.0]))]
    [-0.01, 0.005, 0.01]
    """

    elementwise = True

    def __init__(self, min_value=None, max_value=None):
        name = type(self).__name__
        if min_value is None and max_value is None:
            raise ValueError(f"{name}: give at least one of `min_value` and `max_value`.")
        lo = None if min_value is None else check_array(name, "min_value", min_value)
        hi = None if max_value is None else check_array(name, "max_value", max_value)
        if lo is not None and hi is not None:
            try:
                bad = np.any(lo > hi)
            except ValueError as err:
                raise ValueError(
                    f"{name}: `min_value` of shape {lo.shape} and `max_value` of "
                    f"shape {hi.shape} do not broadcast together."
                ) from err
            if bad:
                raise ValueError(
                    f"{name}: `min_value` must be <= `max_value` everywhere, "
                    f"got min_value={min_value!r}, max_value={max_value!r}."
                )
        self.min_value = min_value if lo is None or lo.ndim else float(lo)
        self.max_value = max_value if hi is None or hi.ndim else float(hi)
        self._low = None if lo is None else Constant(lo)
        self._high = None if hi is None else Constant(hi)

    def _bound(self, bound, arg, x):
        shape = tuple(x.shape)
        try:
            fits = np.broadcast_shapes(bound.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{type(self).__name__}: `{arg}` of shape {bound.shape} does not "
                f"broadcast to the weight's shape {shape}."
            )
        return bound.like(x)

    def project(self, w):
        x = upcast(w)
        low = None if self._low is None else self._bound(self._low, "min_value", x)
        high = None if self._high is None else self._bound(self._high, "max_value", x)
        return clamp(x, low, high)


@register
class CenterAround(Constraint):
    """Fixed mean: the projection onto `{w : mean(w, axis) = ref_value}`.

    The set is affine, so the Euclidean projection is exact and closed form:
    `P(w) = w - mean(w, axis) + ref_value`, each slice shifted by one number.

    Args:
        ref_value: the mean every slice is held at.
        axis: the axes the mean is taken over; `None` (default) is the whole
            tensor. For a Dense kernel of shape `(input_dim, units)`,
            `axis=0` centres the incoming weights of each unit; for a Conv2D
            kernel `(rows, cols, in, out)`, `axis=[0, 1, 2]` centres each
            filter. An int, a list/tuple of ints, and negative axes work.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 6.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.CenterAround(0.0, axis=0)(w)).tolist()
    [[-1.0, -2.0], [1.0, 2.0]]
    """

    def __init__(self, ref_value=0.0, axis=None):
        name = type(self).__name__
        self.ref_value = check_number(name, "ref_value", ref_value)
        self.axis = check_axis(name, axis)

    def project(self, w):
        x = upcast(w)
        axes = resolve_axis(type(self).__name__, self.axis, x.shape)
        count = math.prod([x.shape[a] for a in axes])  # a generator breaks torch's graph
        # sum / count, not ops.mean: Keras's JAX mean reduces float64 in float32.
        return x - ops.sum(x, axis=axes, keepdims=True) / count + self.ref_value
