"""The simplex and the L1 ball: exact projections of each slice through one shift.

Both projections shift (and clip) every entry of a slice by one number
`theta`, found exactly (the kernels are in `_kernels.py`: Michelot passes
with the sort as a fallback, or a sort of the breakpoints with a cap). For
the axes, see `norm.py`: `axis=0` is each unit's incoming weights in a Dense
kernel `(input_dim, units)`, `[0, 1, 2]` each filter of a Conv2D kernel.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import (
    check_axis,
    check_number,
    check_ordered,
    check_simplex_feasible,
    resolve_axis,
)
from kconstraints._constants import UNIT_ROUNDOFF
from kconstraints._kernels import bounded_shift, threshold
from kconstraints._registry import fan_in, register
from kconstraints._tensors import clamp, safe_divisor, slices_as_rows, upcast

__all__ = ["L1Ball", "Simplex"]


def _below_top(x, axes):
    """`x` minus the largest entry of its slice over `axes`: entries <= 0, the top exactly 0.

    The shift of a slice lies in `[max(x) - total, max(x)]` (Michelot's
    start, see `michelot_threshold`): with large entries `x - theta` would
    keep only the rounding of `theta` (ulp(1e9) = 64 in float32; a slice of
    1e9s came out all 0). The top entry is always in the support, and the
    difference of two floats within a factor 2 of each other is exact
    (Sterbenz 1974): after this shift the support is exact, and the
    threshold is found, and subtracted, on numbers of the size of `total`.
    """
    return x - ops.amax(x, axis=axes, keepdims=True)  # not ops.max: see _backend.py


class _SliceThreshold(Constraint):
    """Shared: the weight in its compute dtype, the axes of its slices and their length."""

    def _slices(self, w):
        x = upcast(w)
        axes = resolve_axis(self._owner, "axis", self.axis, x.shape)
        # A list, not a generator: torch.compile can not trace math.prod of one.
        return x, axes, math.prod([x.shape[a] for a in axes])


@register(
    family="slice",
    convex=True,
    exact=True,
    summary=(
        "min_value <= slice <= max_value and sum(slice) = total; exact: a few vectorized "
        "passes (a sort only as a fallback), a sort of the breakpoints with `max_value`"
    ),
    examples={
        "": lambda shape: Simplex(1.0, axis=fan_in(shape)),
        # The capped and floored simplex: a sort of the 2n breakpoints per slice.
        "bounded": lambda shape: Simplex(1.0, fan_in(shape), min_value=-0.01, max_value=0.5),
    },
    uses="mixture or attention weights summing to 1, with bounds",
)
class Simplex(_SliceThreshold):
    """Simplex: the projection onto `{w : min_value <= w <= max_value, sum(w_slice) = total}`.

    `P(w) = clip(w - theta, min_value, max_value)` per slice, where the
    scalar `theta` makes the slice sum to `total`. Without `max_value` it is
    found exactly by a few vectorized Michelot passes (Condat 2016), with a
    sort of the slice as the fallback (Duchi et al. 2008); with it, by a sort
    of the 2n breakpoints (Kiwiel 2008). Both work relative to an entry of
    the support, so entries of any magnitude (1e30 in float32) give a point
    of the set. Exact on ties and zeros; an
    all-equal slice becomes the uniform `total / n`. The set of a slice of n
    entries must not be empty: `n * min_value <= total <= n * max_value`.

    Args:
        total: the sum of every slice (>= 0 when `min_value >= 0`); `total=1`
            gives mixture or attention weights.
        axis: the axes that form a slice: for a Dense kernel of shape
            `(input_dim, units)`, `axis=0` makes the incoming weights of each
            unit a convex combination and `axis=-1` does it for the outgoing
            weights of each input; for a Conv2D kernel
            `(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]` makes each
            filter sum to `total`. `None` is the whole tensor.
        min_value: the floor of every entry (0: the probability simplex).
        max_value: the cap of every entry, `>= min_value` (None: no cap).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.2, 3.0], [0.5, 0.0], [0.9, -1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Simplex(axis=0)(w)).astype(float).round(3).tolist()
    [[0.0, 1.0], [0.3, 0.0], [0.7, 0.0]]
    >>> c = kconstraints.Simplex(axis=0, min_value=0.1, max_value=0.6)
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.1, 0.6], [0.3, 0.3], [0.6, 0.1]]
    """

    def __init__(self, total=1.0, axis=0, min_value=0.0, max_value=None):
        self.min_value = check_number(self._owner, "min_value", min_value)
        if max_value is not None:
            max_value = check_number(self._owner, "max_value", max_value)
            check_ordered(self._owner, "min_value", self.min_value, "max_value", max_value)
        self.max_value = max_value
        # Entries >= min_value >= 0 can only sum to a non-negative total.
        low = 0 if self.min_value >= 0 else None
        self.total = check_number(self._owner, "total", total, low=low)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x, axes, n = self._slices(w)
        low, high = self.min_value, self.max_value
        point = check_simplex_feasible(self._owner, n, self.total, low, high)
        if point is not None:
            return ops.full_like(x, low if point == "min" else high)
        if high is None:
            # Shifted by the floor, the set is the plain simplex of total - n * min_value.
            v = _below_top(x - low, axes)
            shifted = v - threshold(v, self.total - n * low, axes)
            return low + ops.where(shifted < 0, ops.zeros_like(shifted), shifted)  # NaN stays
        rows, restore = slices_as_rows(x, axes)  # the breakpoints are sorted along rows
        # The shift as a free entry and a small offset: with a cap the free
        # entries may lie far below the top (see `bounded_shift`).
        pivot, offset = bounded_shift(rows, self.total, low, high)
        z = clamp((rows - pivot) - offset, low, high)
        # One correction of the free entries for the rounding left (of the
        # offset; of the pivot's breakpoints where they are not solved again):
        # the residual of the small outputs is not rounded.
        free = ops.logical_and(z > low, z < high)
        n_free = ops.sum(ops.cast(free, z.dtype), axis=-1, keepdims=True)
        residual = self.total - ops.sum(z, axis=-1, keepdims=True)
        z = ops.where(free, z + residual / safe_divisor(n_free), z)
        return restore(clamp(z, low, high))


@register(
    family="slice",
    convex=True,
    exact=True,
    summary="‖slice‖₁ <= radius; exact: a few vectorized passes, a sort only as a fallback",
    examples=lambda shape: L1Ball(1.0, axis=fan_in(shape)),
    uses=(
        "a network monotone in chosen inputs: `L1Ball(c, axis=1)` on every kernel and a residual term ([guide](guides/monotone-network.md))",
        "an L1 Lipschitz bound per Dense layer (`L1Ball(c, axis=1)`), L∞ (`L1Ball(c, axis=0)`)",
        "sparse weights with a bounded L1 norm",
    ),
)
class L1Ball(_SliceThreshold):
    """L1 ball: the projection onto `{w : ||w_slice||_1 <= radius}`.

    A slice inside the ball is returned unchanged. Outside,
    `P(w) = sign(w) * max(|w| - theta, 0)`: the soft threshold whose `theta > 0`
    makes `||P(w)||_1 = radius`, i.e. the simplex projection of `|w|`
    (Duchi et al. 2008), found exactly by a few vectorized Michelot passes
    (Condat 2016) with a sort of the slice as the fallback. The result is
    sparse: entries below `theta` in magnitude become 0.

    Args:
        radius: the largest allowed L1 norm of a slice (>= 0).
        axis: the axes that form a slice: `0` bounds the incoming weights of
            each unit of a Dense kernel `(input_dim, units)`, `[0, 1, 2]`
            each filter of a Conv2D kernel `(rows, cols, in_channels,
            filters)`; `None` is the whole tensor.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.1], [-1.0, 0.2], [0.5, -0.3]])
    >>> keras.ops.convert_to_numpy(kconstraints.L1Ball(1.0, axis=0)(w)).astype(float).round(3).tolist()
    [[1.0, 0.1], [0.0, 0.2], [0.0, -0.3]]
    """

    def __init__(self, radius=1.0, axis=0):
        self.radius = check_number(self._owner, "radius", radius, low=0)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x, axes, n = self._slices(w)
        magnitude = ops.abs(x)
        # The threshold is theta = top + theta_below, found on the shifted magnitudes.
        top = ops.amax(magnitude, axis=axes, keepdims=True)
        below = magnitude - top
        theta_below = threshold(below, self.radius, axes)
        shrunk = below - theta_below
        shrunk = ops.where(shrunk > 0, ops.sign(x) * shrunk, ops.zeros_like(shrunk))
        # A slice inside the ball is kept bit for bit; so is one whose norm is
        # above the radius only by the rounding of its sum (theta > 0 alone
        # would depend on the order of the summation).
        eps = UNIT_ROUNDOFF[keras.backend.standardize_dtype(x.dtype)]
        slack = self.radius * eps * (2 + math.log2(n))
        outside = ops.sum(magnitude, axis=axes, keepdims=True) > self.radius + slack
        theta_positive = top + theta_below > 0  # a rounded sum keeps its sign
        return ops.where(ops.logical_and(theta_positive, outside), shrunk, x)
