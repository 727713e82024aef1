"""The simplex and the L1 ball: exact projections of each slice through one shift.

Both projections shift (and clip) every entry of a slice by one number
`theta`, found exactly. For the axes, see `norm.py`: `axis=0` is each unit's
incoming weights in a Dense kernel `(input_dim, units)`, `[0, 1, 2]` each
filter of a Conv2D kernel.

The threshold of the plain simplex and the L1 ball is found by Michelot
passes, each one read of the weight in its own layout, until every slice is
settled (at most `PASSES`), with the sort only as a fallback for slices they
have not settled (`threshold`); the bounded simplex sorts its 2n
breakpoints (`bounded_threshold`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kconstraints._backend import cond, while_loop
from kconstraints._base import Constraint
from kconstraints._checks import check_axis, check_number, check_ordered, resolve_axis
from kconstraints._registry import fan_in, register
from kconstraints._tensors import (
    clamp,
    cumsum_last,
    safe_divisor,
    scalar,
    slices_as_rows,
    upcast,
)

# The most Michelot passes. Random slices of 4096 (normal, uniform,
# exponential, at any scale) settle in 2 to 9; a slice that needs more (e.g. a
# geometric sequence) goes to the sort.
PASSES = 12

# The unit roundoff of the compute dtypes (half precision computes in float32).
ROUNDING = {"float32": 2.0**-24, "float64": 2.0**-53}


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
    partial_sums = cumsum_last(sorted_desc)
    counts = ops.arange(1, n + 1, dtype=v.dtype)
    return ops.amax((partial_sums - total) / counts, axis=-1, keepdims=True)


def michelot_threshold(x, total, axes=(-1,), passes=PASSES):
    """Michelot's iteration for the threshold of each slice over `axes`: `(theta, settled)`.

    Michelot (1986), "A finite algorithm for finding the projection of a
    point onto the canonical simplex of R^n"; Condat (2016), "Fast projection
    onto the simplex and the l1 ball", Section 3. From a lower bound `tau` of
    theta, the mean shift of the entries above it, `(sum_{x > tau} x - total)
    / #{x > tau}`, is again a lower bound and at least `tau`; the set
    `{x > tau}` shrinks until it is the support, and then `tau` is theta.
    Each pass is one read of `x`. The start is the larger of two lower
    bounds, `max(x) - total` and `(sum(x) - total) / n`. A slice is `settled`
    when its last pass kept the set (then `tau` is its fixed point, exact up
    to the rounding of one sum). The passes reduce over `axes` where they
    lie: `theta` and `settled` keep them as size-1 axes. Moving the slices
    to rows first made XLA on a CPU read a strided view in every pass, 9
    times slower (see `_backend.py`).
    """
    n = math.prod([x.shape[a] for a in axes])
    # A tensor: torch.compile makes a Python float that the loop closes over
    # a symbolic number, which torch's while_loop refuses.
    total = scalar(total, x)
    top = ops.amax(x, axis=axes, keepdims=True) - total  # not ops.max: see _backend.py
    mean = (ops.sum(x, axis=axes, keepdims=True) - total) / n
    tau = ops.where(top > mean, top, mean)  # not ops.maximum: float64 (see _backend.py)
    count = ops.full_like(tau, -1.0)

    def one_pass(tau, count, _, i):
        above = x > tau
        new_count = ops.sum(ops.cast(above, x.dtype), axis=axes, keepdims=True)
        sums = ops.sum(ops.where(above, x, ops.zeros_like(x)), axis=axes, keepdims=True)
        # No entry above tau happens only when total is 0 (or too small to
        # move max(x) in this dtype): tau = max(x) is then the answer.
        step = (sums - total) / safe_divisor(new_count)
        new_tau = ops.where(ops.logical_and(step > tau, new_count > 0), step, tau)
        return new_tau, new_count, new_count == count, i + 1

    def unsettled(tau, count, settled, i):
        return ops.logical_and(i < passes, ops.logical_not(ops.all(settled)))

    # Stop once every slice is settled: a (4096, 1024) kernel of normal
    # entries took 7 passes; the same kernel projected, then moved by a step
    # of +-lr per entry (lr = 1e-4 to 1e-2, as Adam moves it), took 3.
    start = (tau, count, ops.zeros_like(tau) > 0, ops.convert_to_tensor(0, "int32"))
    tau, _, settled, _ = while_loop(unsettled, one_pass, start)
    return tau, settled


def sorted_threshold(x, total, axes=(-1,)):
    """`simplex_threshold` of each slice over `axes`, kept as size-1 axes like `michelot_threshold`."""
    axes = tuple(sorted([a % len(x.shape) for a in axes]))
    rows, _ = slices_as_rows(x, axes)
    kept = [1 if a in axes else size for a, size in enumerate(x.shape)]
    # The slices' order in `rows` is the order of the other axes, which `kept` keeps.
    return ops.reshape(simplex_threshold(rows, total), kept)


def threshold(x, total, axes=(-1,)):
    """`sorted_threshold`, from Michelot passes; the sort only for slices they did not settle."""
    tau, settled = michelot_threshold(x, total, axes)

    def sort_unsettled(x, tau, settled, total):
        return ops.where(settled, tau, sorted_threshold(x, total, axes))

    def keep(x, tau, settled, total):
        return tau + 0  # a new tensor: torch.cond refuses a branch returning its input

    # Under torch.compile every operand of the branches must be a tensor.
    operands = (x, tau, settled, scalar(total, x))
    return cond(ops.all(settled), keep, sort_unsettled, operands)


def bounded_threshold(v, total, low, high):
    """The shift `tau` with `sum(clip(v - tau, low, high)) = total` for each row of `v`.

    The sum is piecewise linear and non-increasing in `tau`, with breakpoints
    `v_i - low` (entry i leaves `low`) and `v_i - high` (it reaches `high`).
    The 2n breakpoints are sorted in decreasing order (Helgason, Kennington &
    Lall 1980; Kiwiel 2008, "Breakpoint searching algorithms for the
    continuous quadratic knapsack problem"); cumulative counts and sums give
    the sum at every breakpoint, which locates the piece holding `total`.
    The free entries of that piece, counted again directly at its midpoint,
    give `tau` by one division, clipped into the piece.
    """
    n = v.shape[-1]
    breaks = ops.concatenate([v - low, v - high], axis=-1)
    order = ops.flip(ops.argsort(breaks, axis=-1), axis=-1)
    b = ops.take_along_axis(breaks, order, axis=-1)
    values = ops.take_along_axis(ops.concatenate([v, v], axis=-1), order, axis=-1)
    ones = ops.ones_like(v)
    kind = ops.concatenate([ones, -ones], axis=-1)  # +1: leaves low, -1: reaches high
    kind = ops.take_along_axis(kind, order, axis=-1)
    entered = cumsum_last((kind + 1) / 2)
    capped = cumsum_last((1 - kind) / 2)
    free_sum = cumsum_last(values * kind)
    # The sum at each breakpoint b_k, after the first k have been passed.
    at_break = free_sum - (entered - capped) * b + low * (n - entered) + high * capped
    below = ops.sum(ops.cast(at_break < total, v.dtype), axis=-1, keepdims=True)
    k = ops.cast(below, "int32")
    # The piece [b_{k+1}, b_k] (ends clamped to the first and last breakpoints).
    upper = ops.take_along_axis(b, ops.maximum(k - 1, 0), axis=-1)
    lower = ops.take_along_axis(b, ops.minimum(k, 2 * n - 1), axis=-1)
    guess = (upper + lower) / 2
    x = v - guess
    free = ops.logical_and(x > low, x < high)
    n_free = ops.sum(ops.cast(free, v.dtype), axis=-1, keepdims=True)
    n_high = ops.sum(ops.cast(x >= high, v.dtype), axis=-1, keepdims=True)
    n_low = n - n_free - n_high
    free_v = ops.sum(ops.where(free, v, ops.zeros_like(v)), axis=-1, keepdims=True)
    tau = (free_v + low * n_low + high * n_high - total) / safe_divisor(n_free)
    tau = ops.where(n_free > 0, tau, guess)
    return ops.where(tau > upper, upper, ops.where(tau < lower, lower, tau))


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
)
class Simplex(_SliceThreshold):
    """Simplex: the projection onto `{w : min_value <= w <= max_value, sum(w_slice) = total}`.

    `P(w) = clip(w - theta, min_value, max_value)` per slice, where the
    scalar `theta` makes the slice sum to `total`. Without `max_value` it is
    found exactly by a few vectorized Michelot passes (Condat 2016), with a
    sort of the slice as the fallback (Duchi et al. 2008); with it, by a sort
    of the 2n breakpoints (Kiwiel 2008). Exact on ties and zeros; an
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

    Returns:
        A tensor of the weight's shape and dtype.

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

    def _check_feasible(self, n):
        """The set of a slice of `n` entries is not empty (up to rounding of `n * bound`).

        Returns which bound, if any, leaves a single point: "min", "max" or None.
        """
        floor = n * self.min_value
        cap = math.inf if self.max_value is None else n * self.max_value
        slack = 1e-12 * max(abs(self.total), abs(floor), abs(cap) if cap < math.inf else 0, 1)
        if floor > self.total + slack:
            problem = f"n * min_value = {n} * {self.min_value!r} = {floor!r} > total"
        elif cap < self.total - slack:
            problem = f"n * max_value = {n} * {self.max_value!r} = {cap!r} < total"
        else:
            if floor >= self.total - slack:
                return "min"
            return "max" if cap <= self.total + slack else None
        raise ValueError(
            f"{self._owner}: no slice of {n} entries in [min_value, max_value] = "
            f"[{self.min_value!r}, {self.max_value!r}] sums to `total`={self.total!r}: "
            f"{problem}."
        )

    def project(self, w):
        x, axes, n = self._slices(w)
        low, high = self.min_value, self.max_value
        point = self._check_feasible(n)
        if point is not None:
            return ops.full_like(x, low if point == "min" else high)
        if high is None:
            # Shifted by the floor, the set is the plain simplex of total - n * min_value.
            shifted = x - type(self)._threshold(x - low, self.total - n * low, axes)
            return ops.where(shifted < low, ops.full_like(shifted, low), shifted)
        rows, restore = slices_as_rows(x, axes)  # the breakpoints are sorted along rows
        z = clamp(rows - bounded_threshold(rows, self.total, low, high), low, high)
        # One correction of the free entries: with large entries the shift
        # itself is rounded (ulp(1e6) = 0.06 in float32), and the residual of
        # the small outputs is not.
        free = ops.logical_and(z > low, z < high)
        n_free = ops.sum(ops.cast(free, z.dtype), axis=-1, keepdims=True)
        residual = self.total - ops.sum(z, axis=-1, keepdims=True)
        z = ops.where(free, z + residual / safe_divisor(n_free), z)
        return restore(clamp(z, low, high))

    # The threshold of the plain simplex (the benchmark swaps in the sort).
    _threshold = staticmethod(threshold)


@register(
    family="slice",
    convex=True,
    exact=True,
    summary="‖slice‖₁ <= radius; exact: a few vectorized passes, a sort only as a fallback",
    examples=lambda shape: L1Ball(1.0, axis=fan_in(shape)),
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

    Returns:
        A tensor of the weight's shape and dtype.

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
        theta = type(self)._threshold(magnitude, self.radius, axes)
        shrunk = magnitude - theta
        shrunk = ops.where(shrunk > 0, ops.sign(x) * shrunk, ops.zeros_like(shrunk))
        # A slice inside the ball is kept bit for bit; so is one whose norm is
        # above the radius only by the rounding of its sum (theta > 0 alone
        # would depend on the order of the summation).
        eps = ROUNDING[keras.backend.standardize_dtype(x.dtype)]
        slack = self.radius * eps * (2 + math.log2(n))
        outside = ops.sum(magnitude, axis=axes, keepdims=True) > self.radius + slack
        return ops.where(ops.logical_and(theta > 0, outside), shrunk, x)

    _threshold = staticmethod(threshold)
