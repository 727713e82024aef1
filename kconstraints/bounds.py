"""Bounds on each entry: the orthant `w >= 0` and the box `min_value <= w <= max_value`."""

from __future__ import annotations

import numpy as np
from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import check_array, check_at_least_one, check_fits, check_ordered
from kconstraints._registry import register
from kconstraints._tensors import Constant, clamp, upcast

__all__ = ["Clip", "NonNeg"]


@register(
    family="elementwise",
    convex=True,
    exact=True,
    summary="w >= 0",
    examples=lambda shape: NonNeg(),
    uses="non-negative weights, input-convex networks ([guide](guides/input-convex.md))",
)
class NonNeg(Constraint):
    """Non-negative weights: the projection onto the orthant `{w : w >= 0}`.

    `P(w) = max(w, 0)`, entrywise. The same name and behaviour as
    `keras.constraints.NonNeg`, except that the result always keeps the
    weight's dtype (Keras returns float32 for a float64 torch weight).

    Example:

    >>> import keras, kconstraints
    >>> layer = keras.layers.Dense(4, kernel_constraint=kconstraints.NonNeg())
    >>> [float(v) for v in kconstraints.NonNeg()(keras.ops.convert_to_tensor([-1.0, 2.0]))]
    [0.0, 2.0]
    """

    elementwise = True

    def project(self, w):
        return ops.where(w < 0, ops.zeros_like(w), w)


@register(
    family="elementwise",
    convex=True,
    exact=True,
    summary="min <= w <= max, bounds scalar or per entry",
    examples=lambda shape: Clip(-0.5, 0.5),
    uses="weights in a range, WGAN clipping ([guide](guides/wgan-weight-clipping.md))",
)
class Clip(Constraint):
    """Elementwise bounds: the projection onto the box `{w : min_value <= w <= max_value}`.

    `P(w) = min(max(w, min_value), max_value)`, entrywise. This is the weight
    clipping of the WGAN critic (Arjovsky, Chintala & Bottou 2017,
    arXiv:1701.07875, Algorithm 1): `Clip(-c, c)` after every step. It clips
    the *weights*; the optimizer's `clipvalue` clips the *gradients*.

    Args:
        min_value: lower bound, a number or an array broadcastable to the
            weight's shape (per-entry bounds). `None` means no lower bound.
        max_value: upper bound, likewise. `None` means no upper bound.

    Example:

    >>> import keras, kconstraints
    >>> clip = kconstraints.Clip(-0.01, 0.01)
    >>> [round(float(v), 4) for v in clip(keras.ops.convert_to_tensor([-1.0, 0.005, 3.0]))]
    [-0.01, 0.005, 0.01]
    """

    elementwise = True

    def __init__(self, min_value=None, max_value=None):
        owner = self._owner
        check_at_least_one(owner, min_value=min_value, max_value=max_value)
        self.min_value = None if min_value is None else check_array(owner, "min_value", min_value)
        self.max_value = None if max_value is None else check_array(owner, "max_value", max_value)
        if min_value is not None and max_value is not None:
            check_ordered(self._owner, "min_value", self.min_value, "max_value", self.max_value)
        self._low = None if min_value is None else Constant(np.asarray(self.min_value))
        self._high = None if max_value is None else Constant(np.asarray(self.max_value))

    def _bound(self, name, constant, x):
        if constant is None:
            return None
        check_fits(self._owner, name, constant.shape, x.shape)
        return constant.as_dtype_of(x)

    def project(self, w):
        x = upcast(w)
        low = self._bound("min_value", self._low, x)
        return clamp(x, low, self._bound("max_value", self._high, x))
