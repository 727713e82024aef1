"""The simplex, the L1 ball and the L1 sphere: exact projections of each slice through one shift.

Each projection shifts (and clips) every entry of a slice by one number
`theta`, found exactly (the kernels are in `_kernels.py`: Michelot passes
with the sort as a fallback, or a sort of the breakpoints with a cap or
weights). For the axes, see `norm.py`: `axis=0` is each unit's incoming
weights in a Dense kernel `(input_dim, units)`, `[0, 1, 2]` each filter of
a Conv2D kernel.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import (
    check_axis,
    check_number,
    check_ordered,
    check_positive_weights,
    check_simplex_feasible,
    check_slice_shape,
    check_weighted_feasible,
    resolve_axis,
)
from kconstraints._constants import UNIT_ROUNDOFF
from kconstraints._kernels import (
    bounded_shift,
    simplex_projection,
    threshold,
    weighted_bounded_shift,
)
from kconstraints._registry import fan_in, fan_in_normal, register
from kconstraints._tensors import Constant, clamp, safe_divisor, slices_as_rows, upcast

__all__ = ["L1Ball", "L1Sphere", "Simplex"]


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
        "min_value <= slice <= max_value and sum(slice) = total (⟨weights, slice⟩ = total); "
        "exact: a few vectorized passes (a sort only as a fallback), a sort of the "
        "breakpoints with `max_value` or `weights`"
    ),
    examples={
        "": lambda shape: Simplex(1.0, axis=fan_in(shape)),
        # The capped and floored simplex: a sort of the 2n breakpoints per slice.
        "bounded": lambda shape: Simplex(1.0, fan_in(shape), min_value=-0.01, max_value=0.5),
        # The box section <a, x> = 1 with weights in [1, 4): a sort of the 2n breakpoints.
        "weighted": lambda shape: Simplex(
            1.0, fan_in(shape), -0.01, 0.5, weights=1 + np.abs(fan_in_normal(shape))
        ),
    },
    uses="mixture or attention weights summing to 1, with bounds",
)
class Simplex(_SliceThreshold):
    """Simplex: the projection onto `{w : min_value <= w <= max_value, <a, w_slice> = total}`.

    `P(w) = clip(w - theta * a, min_value, max_value)` per slice, with the
    scalar `theta` that makes `<a, P(w)> = total`; `a` is all ones unless
    `weights` are given (the box section). Without `max_value` or weights,
    theta is found exactly by a few Michelot passes (Condat 2016), a sort as
    the fallback (Duchi et al. 2008); otherwise by a sort of the 2n
    breakpoints (Kiwiel 2008). Exact on ties and zeros. Relative to an entry
    of the support, so a slice of any magnitude (1e30 in float32) gives a
    point of the set; with weights, a slice of n entries up to
    `finfo.max / (4 n max(a) / min(a))`. The set must not be empty:
    `<a, min_value> <= total <= <a, max_value>`.

    Args:
        total: `<a, w_slice>` (>= 0 when `min_value >= 0`); 1 for mixture weights.
        axis: the axes of a slice: `0` makes each unit's incoming weights of a
            Dense kernel `(input_dim, units)` a convex combination, `-1` each
            input's outgoing ones, `[0, 1, 2]` each filter of a Conv2D kernel
            `(rows, cols, in_channels, filters)`; `None` is the whole tensor.
        min_value: the floor of every entry (0: the probability simplex).
        max_value: the cap of every entry, `>= min_value` (None: no cap).
        weights: the vector `a` (finite, > 0), of the slice's shape or flat
            in the slice's order (as `Hyperplane`'s normal); None: all ones.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.2, 3.0], [0.5, 0.0], [0.9, -1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Simplex(axis=0)(w)).astype(float).round(3).tolist()
    [[0.0, 1.0], [0.3, 0.0], [0.7, 0.0]]
    >>> c = kconstraints.Simplex(axis=0, min_value=0.1, max_value=0.6)
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.1, 0.6], [0.3, 0.3], [0.6, 0.1]]
    >>> c = kconstraints.Simplex(axis=0, max_value=0.6, weights=[1.0, 2.0, 0.5])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.1, 0.6], [0.3, 0.2], [0.6, 0.0]]
    """

    def __init__(self, total=1.0, axis=0, min_value=0.0, max_value=None, weights=None):
        self.min_value = check_number(self._owner, "min_value", min_value)
        if max_value is not None:
            max_value = check_number(self._owner, "max_value", max_value)
            check_ordered(self._owner, "min_value", self.min_value, "max_value", max_value)
        self.max_value = max_value
        # Entries >= min_value >= 0 can only sum to a non-negative total.
        low = 0 if self.min_value >= 0 else None
        self.total = check_number(self._owner, "total", total, low=low)
        self.axis = check_axis(self._owner, "axis", axis)
        if weights is not None:
            weights = check_positive_weights(self._owner, "weights", weights)
            self._point = check_weighted_feasible(
                self._owner, float(weights.sum()), self.total, self.min_value, max_value
            )
            # Scaled to a largest weight of 1, which leaves the set as it is:
            # the squares of the weights neither overflow nor all underflow.
            scale = float(weights.max())
            a = weights.reshape(-1) / scale
            self._a = Constant(a)
            self._total = self.total / scale
            # Without a cap, no point of the set exceeds `min_value + excess / a_i`
            # (the excess over the floor all on entry i): that cap leaves the set as it is.
            excess = self._total - self.min_value * float(a.sum())
            implied = self.min_value + excess / float(a.min())
            self._cap = implied if max_value is None else max_value
        self.weights = weights

    def project(self, w):
        x, axes, n = self._slices(w)
        if self.weights is not None:
            return self._weighted(x, axes)
        low, high = self.min_value, self.max_value
        point = check_simplex_feasible(self._owner, n, self.total, low, high)
        if point is not None:
            return ops.full_like(x, low if point == "min" else high)
        if high is None:
            # Shifted by the floor, the set is the plain simplex of total - n * min_value.
            return low + simplex_projection(x - low, self.total - n * low, axes)
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

    def _weighted(self, x, axes):
        """The box section: the scores `w / a` shifted by one theta, as the bounded simplex's entries."""
        check_slice_shape(self._owner, "weights", self.weights.shape, axes, tuple(x.shape))
        low, high = self.min_value, self._cap
        if self._point is not None:
            return ops.full_like(x, low if self._point == "min" else self.max_value)
        rows, restore = slices_as_rows(x, axes)
        a = self._a.as_dtype_of(rows)
        shifted, offset = weighted_bounded_shift(rows, a, self._total, low, high)
        z = clamp(a * (shifted - offset), low, high)
        # One correction of the free entries along `a` for the rounding left:
        # the residual of the outputs is of their size, not of the scores'.
        free = ops.logical_and(z > low, z < high)
        squares = ops.sum(ops.where(free, a * a, ops.zeros_like(z)), axis=-1, keepdims=True)
        residual = self._total - ops.sum(a * z, axis=-1, keepdims=True)
        z = ops.where(free, z + residual * a / safe_divisor(squares), z)
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


@register(
    family="slice",
    convex=False,
    exact=True,
    summary=(
        "‖slice‖₁ = radius (not convex); exact: the simplex projection of abs(slice) with "
        "its signs (+ for zeros)"
    ),
    examples=lambda shape: L1Sphere(1.0, axis=fan_in(shape)),
    uses="weights of a fixed L1 norm per unit or filter",
)
class L1Sphere(_SliceThreshold):
    """L1 sphere: a nearest point of `{w : ||w_slice||_1 = radius}`, the set not convex.

    `P(w) = s * Q(|w|)`, with `Q` the projection onto the simplex
    `{y >= 0, sum(y) = radius}` and `s = sign(w)`, +1 where `w = 0`. Any
    point of the sphere moves no farther from `w` when its signs are made
    those of `w`, and then its distance is that of its magnitudes to `|w|`:
    the nearest point is `Q(|w|)` with the signs of `w` (as optax's
    `projection_l1_sphere`). A slice outside the ball is soft-thresholded
    (the `L1Ball` projection); inside, every entry moves outward by
    `(radius - ||w||_1) / n`. Where `w` has zeros that `Q` gives mass, the
    nearest point is not unique and +1 picks one: the zero slice becomes
    `radius / n` everywhere. `Q` is found as in `Simplex` (Condat 2016).

    Args:
        radius: the L1 norm of every slice (>= 0; 0 is the zero slice).
        axis: the axes that form a slice: `0` for the incoming weights of
            each unit of a Dense kernel `(input_dim, units)`, `[0, 1, 2]` for
            each filter of a Conv2D kernel `(rows, cols, in_channels,
            filters)`; `None` is the whole tensor.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.1], [-1.0, -0.2], [0.5, 0.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.L1Sphere(1.0, axis=0)(w)).astype(float).round(3).tolist()
    [[1.0, 0.333], [0.0, -0.433], [0.0, 0.233]]
    """

    def __init__(self, radius=1.0, axis=0):
        self.radius = check_number(self._owner, "radius", radius, low=0)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x, axes, _ = self._slices(w)
        magnitude = simplex_projection(ops.abs(x), self.radius, axes)
        return ops.where(x < 0, 0 - magnitude, magnitude)  # 0 - 0 is +0: no -0.0
