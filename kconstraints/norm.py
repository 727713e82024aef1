"""Euclidean norm constraints: each slice along `axis` is one vector, rescaled as a whole.

`axis` follows `keras.constraints`: it names the axes a norm is taken over.
For a Dense kernel of shape `(input_dim, units)`, `axis=0` constrains the
incoming weight vector of each unit. For a Conv2D kernel of shape
`(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]` constrains each
filter, and so does `axis="fan_in"` (every axis but the last) for a kernel of
any rank. `axis=None` treats the whole tensor as one vector; negative axes
work. The default `axis=0` on a kernel of three or more dimensions bounds
its rows, not its filters (Keras's convention: its `MaxNorm(0.5)` let filter
norms reach 1.65 on a Conv2D kernel), and warns; `axis=[0]` keeps that
choice without the warning.
"""

from __future__ import annotations

import warnings

from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import check_axis, check_number, check_ordered, resolve_axis
from kconstraints._registry import fan_in, register
from kconstraints._tensors import clamp, l2_norms, safe_divisor, upcast

__all__ = ["MaxNorm", "MinMaxNorm", "UnitNorm"]


class _NormConstraint(Constraint):
    """Shared: the weight in its compute dtype and the norm of each slice."""

    def _norms(self, w):
        x = upcast(w)
        if self.axis == 0 and len(x.shape) >= 3:  # an int 0: the default, Keras's trap
            warnings.warn(
                f"{self._owner}: axis=0 on a weight of shape {tuple(x.shape)} takes the norm "
                "of each slice along axis 0, not of each filter; a convolution kernel's "
                "filters need axis='fan_in' (every axis but the last). Pass axis=[0] to keep "
                "axis 0 without this warning.",
                UserWarning,
                stacklevel=2,
            )
        return x, l2_norms(x, resolve_axis(self._owner, "axis", self.axis, x.shape))


@register(
    family="slice",
    convex=True,
    exact=True,
    summary="‖slice‖₂ <= max_value",
    examples=lambda shape: MaxNorm(2.0, axis=fan_in(shape)),
    uses='a bounded or unit norm per unit or filter (`axis="fan_in"` for a Conv kernel)',
)
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
            `0` for a Dense kernel, `[0, 1, 2]` or `"fan_in"` for a Conv2D
            kernel.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.3], [4.0, 0.4]])
    >>> keras.ops.convert_to_numpy(kconstraints.MaxNorm(1.0, axis=0)(w)).astype(float).round(3).tolist()
    [[0.6, 0.3], [0.8, 0.4]]
    """

    def __init__(self, max_value=2, axis=0):
        self.max_value = check_number(self._owner, "max_value", max_value, low=0)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x, norms = self._norms(w)
        bound = self.max_value
        scale = ops.where(norms > bound, bound / safe_divisor(norms), ops.ones_like(norms))
        return x * ops.cast(scale, x.dtype)


@register(
    family="slice",
    convex=False,
    exact=True,
    summary="‖slice‖₂ = 1",
    examples=lambda shape: UnitNorm(axis=fan_in(shape)),
    uses='a bounded or unit norm per unit or filter (`axis="fan_in"` for a Conv kernel)',
)
class UnitNorm(_NormConstraint):
    """Unit norm: the projection onto the sphere `{w : ||w_slice||_2 = 1}`.

    `P(w) = w / ||w||` per slice. An all-zero slice has no nearest point on
    the sphere (every point is as near); it is returned as zeros, never NaN.

    Args:
        axis: the axes a norm is taken over (see the module docstring):
            `0` for a Dense kernel, `[0, 1, 2]` or `"fan_in"` for a Conv2D
            kernel.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0], [4.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.UnitNorm(axis=0)(w)).astype(float).round(3).tolist()
    [[0.6], [0.8]]
    """

    def __init__(self, axis=0):
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x, norms = self._norms(w)
        return x / safe_divisor(norms)


@register(
    family="slice",
    convex=False,
    exact="`rate < 1` moves only part of the way to the set",
    summary="min <= ‖slice‖₂ <= max; `rate < 1` moves only part of the way",
    examples=lambda shape: MinMaxNorm(0.5, 2.0, axis=fan_in(shape)),
    uses='a bounded or unit norm per unit or filter (`axis="fan_in"` for a Conv kernel)',
)
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
            `0` for a Dense kernel, `[0, 1, 2]` or `"fan_in"` for a Conv2D
            kernel.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.3, 30.0], [0.4, 40.0]])
    >>> c = kconstraints.MinMaxNorm(min_value=1.0, max_value=2.0, axis=0)
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.6, 1.2], [0.8, 1.6]]
    """

    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        owner = self._owner
        self.min_value = check_number(owner, "min_value", min_value, low=0)
        self.max_value = check_number(owner, "max_value", max_value, low=0)
        check_ordered(owner, "min_value", self.min_value, "max_value", self.max_value)
        self.rate = check_number(owner, "rate", rate, low=0, high=1, low_open=True)
        self.axis = check_axis(owner, "axis", axis)

    def project(self, w):
        x, norms = self._norms(w)
        target = clamp(norms, self.min_value, self.max_value)
        if self.rate != 1:
            target = self.rate * target + (1 - self.rate) * norms
        # w / ||w|| first, then the target: target / ||w|| overflowed to inf for a
        # subnormal slice (NaN out, on torch's CPU, which keeps subnormals).
        unit = x / safe_divisor(norms)
        return ops.where(norms > 0, unit * ops.cast(target, x.dtype), x)
