"""The projection kernels shared by the constraints: the simplex threshold, isotonic rows, keep-largest.

Each works on a tensor in its compute dtype and returns one of the same
dtype. `simplex` and `stochastic` use the simplex thresholds, `order` the
isotonic fits, `sparse` the keep-largest masks; the benchmarks time them
directly.

The simplex threshold. The threshold of the plain simplex and the L1 ball is
found by Michelot passes, each one read of the weight in its own layout,
until every slice is settled (at most `PASSES`), with the sort only as a
fallback for slices they have not settled (`threshold`); the bounded simplex
sorts its 2n breakpoints and returns its shift as an entry plus an offset
(`bounded_shift`); `DoublyStochastic` takes the sorted threshold of each
row (`simplex_threshold`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kconstraints._backend import cond, fori_loop, while_loop
from kconstraints._constants import PIVOT_ROUNDING, UNIT_ROUNDOFF
from kconstraints._tensors import clamp, cumsum_last, safe_divisor, scalar, slices_as_rows

# ------------------------------------------------------ the simplex threshold

# The most Michelot passes. Random slices of 4096 (normal, uniform,
# exponential, at any scale) settle in 2 to 9; a slice that needs more (e.g. a
# geometric sequence) goes to the sort.
PASSES = 12


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


def simplex_projection(x, total, axes=(-1,)):
    """The projection of each slice of `x` over `axes` onto `{z >= 0, sum(z) = total}`.

    `max(x - theta, 0)`, with `theta` from `threshold`, found and subtracted
    on `x - max(x)`: the shift lies in `[max(x) - total, max(x)]`
    (Michelot's start, see `michelot_threshold`), so with large entries
    `x - theta` would keep only the rounding of `theta` (ulp(1e9) = 64 in
    float32; a slice of 1e9s came out all 0). The top entry is always in
    the support, and the difference of two floats within a factor 2 of each
    other is exact (Sterbenz 1974): after this shift the support is exact,
    and the threshold is found, and subtracted, on numbers of the size of
    `total`. An entry of `-inf` lies below every threshold and comes out 0
    (`SparseSimplex` leaves entries out of the support so), as long as its
    slice holds a finite entry.
    """
    v = x - ops.amax(x, axis=axes, keepdims=True)  # not ops.max: see _backend.py
    shifted = v - threshold(v, total, axes)
    return ops.where(shifted < 0, ops.zeros_like(shifted), shifted)  # NaN stays


def bounded_shift(v, total, low, high):
    """The shift `tau` with `sum(clip(v - tau, low, high)) = total` for each row of `v`, as `(pivot, offset)`.

    `tau = pivot + offset`, with `pivot` an entry of the row next to the
    free ones and `offset` of the size of the bounds: the free entries lie
    within `high - low` of each other, so `(v - pivot) - offset` is exact
    up to the rounding of `offset` (Sterbenz 1974), where `v - tau` keeps
    only the rounding of `tau` (ulp(1e9) = 64 in float32). The breakpoints
    `v - low` and `v - high` of a solve are rounded like `v`; where that is
    not small against `high - low` near the pivot (the two breakpoints of
    an entry may even round to one), a second solve on `v - pivot` has them
    exact (a second sort, under `cond`: only for such large entries).
    """
    pivot, offset = _bounded_shift_once(v, total, low, high)
    unit = UNIT_ROUNDOFF[keras.backend.standardize_dtype(v.dtype)]
    coarse = ops.any(ops.abs(pivot) * unit > (high - low) * PIVOT_ROUNDING)

    def again(v, pivot, offset, total, low, high):
        near, offset = _bounded_shift_once(v - pivot, total, low, high)
        return pivot + near, offset  # `near` is an entry of `v - pivot`: the sum is an entry

    def keep(v, pivot, offset, total, low, high):
        return pivot + 0, offset + 0  # new tensors: torch.cond refuses a branch returning its input

    # Under torch.compile every operand of the branches must be a tensor (the
    # bounds too: a second constraint made them symbolic floats, which torch.cond refuses).
    operands = (v, pivot, offset, scalar(total, v), scalar(low, v), scalar(high, v))
    return cond(coarse, again, keep, operands)


def _bounded_shift_once(v, total, low, high):
    """One solve of `bounded_shift`: a sort of the 2n breakpoints.

    The sum is piecewise linear and non-increasing in `tau`, with breakpoints
    `v_i - low` (entry i leaves `low`) and `v_i - high` (it reaches `high`).
    The 2n breakpoints are sorted in decreasing order (Helgason, Kennington &
    Lall 1980; Kiwiel 2008, "Breakpoint searching algorithms for the
    continuous quadratic knapsack problem"); the sum at every breakpoint
    locates the piece holding `total`. The free entries of that piece,
    counted again directly at its midpoint, give `tau` by one division,
    clipped into the piece. The pivot is the largest free entry.
    """
    n = v.shape[-1]
    breaks = ops.concatenate([v - low, v - high], axis=-1)
    order = ops.flip(ops.argsort(breaks, axis=-1), axis=-1)
    b = ops.take_along_axis(breaks, order, axis=-1)
    ones = ops.ones_like(v)
    kind = ops.concatenate([ones, -ones], axis=-1)  # +1: leaves low, -1: reaches high
    kind = ops.take_along_axis(kind, order, axis=-1)
    capped = cumsum_last((1 - kind) / 2)
    free = cumsum_last(kind)  # entered - capped
    # The free entries rise by `free * gap` from one breakpoint to the next; a
    # capped entry stops at `high`, so its rise over its own two breakpoints
    # (high - low, as rounded) goes back out. Every step is >= 0: no sum of
    # +-v_i, which a tree-shaped scan (`cumsum_last` on torch's float64)
    # cancels with the rounding of the largest v_i, far above `total`.
    steps = free[..., :-1] * (b[..., :-1] - b[..., 1:])
    rise = cumsum_last(ops.concatenate([ops.zeros_like(b[..., :1]), steps], axis=-1))
    pair = ops.concatenate([ops.zeros_like(v), breaks[..., :n] - breaks[..., n:]], axis=-1)
    dropped = cumsum_last(ops.take_along_axis(pair, order, axis=-1))
    # The sum at each breakpoint b_k, after the first k have been passed.
    at_break = low * (n - capped) + high * capped + (rise - dropped)
    below = ops.sum(ops.cast(at_break < total, v.dtype), axis=-1, keepdims=True)
    k = ops.cast(below, "int32")
    # The piece [b_{k+1}, b_k] (ends clamped to the first and last breakpoints).
    upper = ops.take_along_axis(b, ops.maximum(k - 1, 0), axis=-1)
    lower = ops.take_along_axis(b, ops.minimum(k, 2 * n - 1), axis=-1)
    guess = (upper + lower) / 2
    x = v - guess
    is_free = ops.logical_and(x > low, x < high)
    n_free = ops.sum(ops.cast(is_free, v.dtype), axis=-1, keepdims=True)
    n_high = ops.sum(ops.cast(x >= high, v.dtype), axis=-1, keepdims=True)
    n_low = n - n_free - n_high
    lowest = ops.convert_to_tensor(-math.inf, dtype=v.dtype)
    pivot = ops.amax(ops.where(is_free, v, lowest), axis=-1, keepdims=True)
    # No free entry: the two breakpoints of the entry that crosses `total`
    # rounded to one, so the piece is not its own. That entry is the pivot.
    crossing = ops.take_along_axis(order, ops.minimum(k, 2 * n - 1), axis=-1)
    crossing = ops.take_along_axis(ops.concatenate([v, v], axis=-1), crossing, axis=-1)
    pivot = ops.where(n_free > 0, pivot, crossing)
    free_sum = ops.sum(ops.where(is_free, v - pivot, ops.zeros_like(v)), axis=-1, keepdims=True)
    offset = (free_sum + low * n_low + high * n_high - total) / safe_divisor(n_free)
    offset = ops.where(n_free > 0, offset, guess - pivot)  # tau = guess: the sum is flat
    return pivot, clamp(offset, lower - pivot, upper - pivot)


def bounded_threshold(v, total, low, high):
    """The shift `tau` with `sum(clip(v - tau, low, high)) = total` for each row of `v` (`bounded_shift`)."""
    pivot, offset = bounded_shift(v, total, low, high)
    return pivot + offset


# ------------------------------------------------------ the weighted threshold


def _stored(x):
    """`x`'s rounded values read back from a sort, so that no compiled consumer recomputes them.

    XLA turns a division by a constant into a product and fuses it into
    each consumer, where LLVM contracts `x * c - m` into one FMA: the exact
    product less `m`, not the rounded one. `s - max(s)` of the scores
    `w / a` then left the top score at its rounding, 1e8 at 1e16 in float32,
    not 0 (found by the property suite). A sort's output is a buffer of
    rounded values, and a gather from it a load.
    """
    order = ops.argsort(x, axis=-1)
    return ops.take_along_axis(ops.sort(x, axis=-1), ops.argsort(order, axis=-1), axis=-1)


def weighted_bounded_shift(v, a, total, low, high):
    """`(shifted, offset)` for the box section `sum(a * clip(v - tau * a, low, high)) = total`, per row.

    `bounded_shift` for weights `a` (> 0, one row broadcast against the rows
    of `v`), on the scores `s = v / a`: `x = clip(a * (s - tau), low, high)`,
    whose breakpoints `s - low / a` and `s - high / a` are the scores shifted
    by constants. Returns `shifted = s - pivot`, exact for the scores next to
    the pivot (Sterbenz 1974), and `offset = tau - pivot`, of the size of
    `(high - low) / a`; solved again on `shifted` where the scores are too
    large for their breakpoints to keep the bounds' width.
    """
    s = _stored(v / a)
    pivot, offset = _weighted_shift_once(s, a, total, low, high)
    unit = UNIT_ROUNDOFF[keras.backend.standardize_dtype(s.dtype)]
    width = (high - low) / ops.amax(a)  # the narrowest free interval of a score
    coarse = ops.any(ops.abs(pivot) * unit > width * PIVOT_ROUNDING)

    def again(v, a, pivot, offset, total, low, high):
        near, offset = _weighted_shift_once(_stored(v / a) - pivot, a, total, low, high)
        return pivot + near, offset  # `near` is a score of `s - pivot`: the sum is a score

    def keep(v, a, pivot, offset, total, low, high):
        return pivot + 0, offset + 0  # new tensors: torch.cond refuses a branch returning its input

    # Under torch.compile every operand of the branches must be a tensor; `v`,
    # not the scores, goes in (torch.compile's cond refused the layout of a gather).
    operands = (v, a, pivot, offset, scalar(total, v), scalar(low, v), scalar(high, v))
    pivot, offset = cond(coarse, again, keep, operands)
    return s - pivot, offset


def _weighted_shift_once(s, a, total, low, high):
    """One solve of `weighted_bounded_shift`: a sort of the 2n breakpoints (Kiwiel 2008).

    As `_bounded_shift_once`, with entry i moving at slope `a_i**2` between
    its breakpoints `s_i - high / a_i` (it reaches `high`) and `s_i - low / a_i`
    (it leaves `low`): the sum rises by `sum_free a**2 * gap` from one
    breakpoint to the next, and a capped entry's rise goes back out for
    `a_i * high`. The free slope is taken as 0 where no entry is free (the
    count is exact, a sum of `+-a**2` is not).
    """
    n = s.shape[-1]
    a = ops.broadcast_to(a, s.shape)
    leaves, reaches = s - low / a, s - high / a
    breaks = ops.concatenate([leaves, reaches], axis=-1)
    order = ops.flip(ops.argsort(breaks, axis=-1), axis=-1)
    b = ops.take_along_axis(breaks, order, axis=-1)
    ones, zeros = ops.ones_like(s), ops.zeros_like(s)

    def sorted_cumsum(first, second):
        both = ops.concatenate([first, second], axis=-1)
        return cumsum_last(ops.take_along_axis(both, order, axis=-1))

    free = sorted_cumsum(ones, -ones)  # entered - capped, exact
    slope = sorted_cumsum(a * a, -(a * a))
    slope = ops.where(free > 0, clamp(slope, low=0.0), ops.zeros_like(slope))
    capped = sorted_cumsum(zeros, a)  # the weight of the capped entries
    steps = slope[..., :-1] * (b[..., :-1] - b[..., 1:])
    rise = cumsum_last(ops.concatenate([ops.zeros_like(b[..., :1]), steps], axis=-1))
    dropped = sorted_cumsum(zeros, a * a * (leaves - reaches))
    weight = ops.sum(a, axis=-1, keepdims=True)
    at_break = low * (weight - capped) + high * capped + (rise - dropped)
    below = ops.sum(ops.cast(at_break < total, s.dtype), axis=-1, keepdims=True)
    k = ops.cast(below, "int32")
    upper = ops.take_along_axis(b, ops.maximum(k - 1, 0), axis=-1)
    lower = ops.take_along_axis(b, ops.minimum(k, 2 * n - 1), axis=-1)
    guess = (upper + lower) / 2
    is_high = guess <= reaches
    is_free = ops.logical_and(guess > reaches, guess < leaves)
    is_low = guess >= leaves
    lowest = ops.convert_to_tensor(-math.inf, dtype=s.dtype)
    pivot = ops.amax(ops.where(is_free, s, lowest), axis=-1, keepdims=True)
    crossing = ops.take_along_axis(order, ops.minimum(k, 2 * n - 1), axis=-1)
    crossing = ops.take_along_axis(ops.concatenate([s, s], axis=-1), crossing, axis=-1)
    n_free = ops.sum(ops.cast(is_free, s.dtype), axis=-1, keepdims=True)
    pivot = ops.where(n_free > 0, pivot, crossing)

    def total_of(mask, values):
        return ops.sum(ops.where(mask, values, ops.zeros_like(values)), axis=-1, keepdims=True)

    free_slope = total_of(is_free, a * a)
    free_sum = total_of(is_free, a * a * (s - pivot))
    bounded = low * total_of(is_low, a) + high * total_of(is_high, a)
    offset = (free_sum + bounded - total) / safe_divisor(free_slope)
    offset = ops.where(n_free > 0, offset, guess - pivot)  # tau = guess: the sum is flat
    return pivot, clamp(offset, lower - pivot, upper - pivot)


# ------------------------------------------------------ isotonic rows

# `method="auto"` takes the pairwise hull for slices up to this length and the
# merge of sorted blocks above it. The pairwise hull does O(n^2) work in O(1)
# rounds; the merge O(n log^2 n) work in O(log^2 n) rounds. On a loaded 2-core
# CPU (JAX, rough), the merge took 1/16 of the pairwise time on 256
# slices of 1024 and 1/20 on 1024 slices of 256.
PAIRWISE_MAX_LENGTH = 64

# How many (start, end) pairs of points are held at once, summed over the
# slices of one chunk: 2**23 pairs, 32 MiB per float32 temporary. A chunk holds
# at least one slice, so a slice longer than 2895 entries goes over it. A
# 4096 x 1024 weight projected along its 1024-long axis runs in 586 chunks of 7
# slices (1025**2 pairs each); along its 4096-long axis, in 1024 chunks of one.
PAIRS_PER_CHUNK = 2**23


def _hull_flags(cumsums):
    """For rows of points `(m, cumsums[m])`: 1 where a point lies on the lower convex hull.

    A point m lies on the lower hull exactly when some line through it stays
    below every other point, i.e. when the steepest chord arriving from the
    left is no steeper than the flattest chord leaving to the right. All
    chords of a row are formed at once: O(n^2) work and memory, no loop.
    """
    n1 = cumsums.shape[-1]
    index = ops.arange(n1, dtype="int32")
    gap = ops.cast(index[None, :] - index[:, None], cumsums.dtype)  # [a, b] -> b - a
    ahead = gap > 0
    chord = (cumsums[:, None, :] - cumsums[:, :, None]) / ops.where(ahead, gap, ops.ones_like(gap))
    inf = ops.convert_to_tensor(math.inf, dtype=cumsums.dtype)
    steepest_in = ops.amax(ops.where(ahead, chord, -inf), axis=-2)
    flattest_out = ops.amin(ops.where(ahead, chord, inf), axis=-1)
    return ops.cast(steepest_in <= flattest_out, cumsums.dtype)


def _hull_flags_chunked(cumsums):
    """`_hull_flags` over chunks of rows, so memory stays under `PAIRS_PER_CHUNK`."""
    rows, n1 = cumsums.shape
    per_chunk = max(1, PAIRS_PER_CHUNK // (n1 * n1))
    if rows <= per_chunk:
        return _hull_flags(cumsums)
    chunks = -(-rows // per_chunk)
    padded = ops.concatenate(
        [cumsums, ops.zeros((chunks * per_chunk - rows, n1), dtype=cumsums.dtype)]
    )
    flags = ops.map(_hull_flags, ops.reshape(padded, (chunks, per_chunk, n1)))
    return ops.reshape(flags, (-1, n1))[:rows]


def isotonic_rows_pairwise(x):
    """The non-decreasing least-squares fit of each row of `x`, exact, from all chords.

    The fit is the left derivative of the greatest convex minorant of the
    cumulative sums `C_0 = 0, C_m = x_1 + ... + x_m` (Barlow, Bartholomew,
    Bremner & Brunk 1972, "Statistical inference under order restrictions"):
    entry i takes the mean of the hull segment over it, `(C_e - C_s) / (e - s)`
    between the hull vertices `s <= i < e`. Equivalently
    `P(x)_i = max_{j <= i} min_{k >= i} mean(x_j..x_k)`.
    """
    n = x.shape[-1]
    cumsums = ops.concatenate([ops.zeros_like(x[:, :1]), cumsum_last(x)], axis=-1)
    on_hull = _hull_flags_chunked(cumsums) > 0
    point = ops.arange(n + 1, dtype="int32")
    # Hull vertices in increasing order; the last one, n, pads the tail.
    vertices = ops.sort(ops.where(on_hull, point, point[-1]), axis=-1)
    segment = ops.cumsum(ops.cast(on_hull[:, :n], "int32"), axis=-1) - 1
    start = ops.take_along_axis(vertices, segment, axis=-1)
    end = ops.take_along_axis(vertices, segment + 1, axis=-1)
    width = end - start
    mean = (
        ops.take_along_axis(cumsums, end, axis=-1) - ops.take_along_axis(cumsums, start, axis=-1)
    ) / (ops.cast(width, x.dtype))
    # A segment of one entry is that entry: an ordered slice comes back bit for bit.
    return ops.where(width == 1, x, mean)


def _excess(left, right, levels):
    """`sum(max(left - c, 0)) - sum(max(c - right, 0))` per row, for each column `c` of `levels`."""
    above = ops.sum(clamp(left[:, None, :] - levels[:, :, None], low=0.0), axis=-1)
    below = ops.sum(clamp(levels[:, :, None] - right[:, None, :], low=0.0), axis=-1)
    return above - below


def _merge_halves(x, fit):
    """The fit of each row of `x` from the fits `fit` of its two halves.

    For sorted halves `a` (left) and `b` (right), the fit of the row is
    `[min(a, m), max(b, m)]` for the one level `m` that keeps the row's sum:
    `h(m) = sum(max(a - m, 0)) - sum(max(m - b, 0)) = 0` (the bridge of the two
    halves' convex minorants). `h` decreases, so the entries pooled at `m`
    are the `a_i` with `h(a_i) <= 0` and the `b_j` with `h(b_j) > 0`: two
    binary searches on the sorted halves, each step one pass over the row,
    and `m` is the mean of `x` over the pooled run.
    """
    half = x.shape[-1] // 2
    # Copies, not views of `fit`: the loop below is a torch `while_loop` when
    # compiled, which refuses closed-over tensors that alias (`_backend.fori_loop`).
    left, right = ops.copy(fit[:, :half]), ops.copy(fit[:, half:])

    def search(k, pos):
        # Binary lifting: after the step of size `half >> k`, pos counts the
        # entries of each half with h > 0 among those looked at so far.
        step = ops.right_shift(half, k)
        look = ops.minimum(pos + (step - 1), half - 1)
        levels = ops.concatenate(
            [
                ops.take_along_axis(left, look[:, :1], axis=-1),
                ops.take_along_axis(right, look[:, 1:], axis=-1),
            ],
            axis=-1,
        )
        grow = ops.logical_and(_excess(left, right, levels) > 0, pos + step <= half)
        return pos + ops.where(grow, step, 0)

    steps = half.bit_length()  # steps of half, half / 2, ..., 1
    pos = fori_loop(0, steps, search, ops.zeros((x.shape[0], 2), dtype="int32"))
    index = ops.arange(2 * half, dtype="int32")
    pooled = ops.logical_and(index >= pos[:, :1], index < pos[:, 1:] + half)
    total = ops.sum(ops.where(pooled, x, ops.zeros_like(x)), axis=-1, keepdims=True)
    mean = total / ops.cast(half - pos[:, :1] + pos[:, 1:], x.dtype)
    merged = ops.concatenate(
        [ops.where(left > mean, mean, left), ops.where(right < mean, mean, right)], axis=-1
    )
    # Halves already in order are kept as they are, bit for bit.
    return ops.where(left[:, -1:] > right[:, :1], merged, fit)


def isotonic_rows_merged(x):
    """The non-decreasing least-squares fit of each row of `x`, exact, by merging sorted blocks.

    Blocks of 1, 2, 4, ... entries are fitted bottom up, each from the fits
    of its two halves (`_merge_halves`): log2(n) levels of log2(n) search
    steps, each step one pass over the weight, so O(n log^2 n) work, O(n)
    memory and fixed shapes. A divide-and-conquer pool-adjacent-violators
    (Ayer, Brunk, Ewing, Reid & Silverman 1955; Best & Chakravarti 1990,
    "Active set algorithms for isotonic regression"), with the merge of two
    fitted blocks as the bridge of their lower convex hulls (Barlow et al.
    1972). The row is padded to a power of two with its largest entry, which
    no fit value exceeds, so the padding changes nothing before it.
    """
    rows, n = x.shape
    if n <= 1:
        return x
    levels = (n - 1).bit_length()
    size = 2**levels
    if size > n:
        top = ops.amax(x, axis=-1, keepdims=True)
        x = ops.concatenate([x, ops.broadcast_to(top, (rows, size - n))], axis=-1)
    fit = x
    for level in range(levels):
        block = 2 ** (level + 1)
        shape = (rows * size // block, block)
        fit = _merge_halves(ops.reshape(x, shape), ops.reshape(fit, shape))
    return ops.reshape(fit, (rows, size))[:, :n]


def isotonic_rows(x, method="auto"):
    """The non-decreasing least-squares fit of each row of `x`, by `method` (see `Monotonic`)."""
    if method == "pairwise" or (method == "auto" and x.shape[-1] <= PAIRWISE_MAX_LENGTH):
        return isotonic_rows_pairwise(x)
    return isotonic_rows_merged(x)


# ------------------------------------------------------ keep-largest


def keep_largest(magnitude, k):
    """A boolean mask of the `k` largest entries of each row of `magnitude`, lower index first on ties.

    `t`, the k-th largest value of a row, comes from a `top_k` of the
    smaller side (the k largest, or the n - k + 1 smallest). Every entry
    above `t` is kept, and of the entries equal to `t` the first ones, as
    many as there is room for: a running count of the ties picks them.
    Fixed shapes throughout; `0 < k < n` (the caller handles the ends).
    """
    n = magnitude.shape[-1]
    if k <= n - k + 1:
        t = ops.top_k(magnitude, k)[0][..., k - 1 :]
    else:  # the k-th largest is the (n - k + 1)-th smallest
        t = -ops.top_k(-magnitude, n - k + 1)[0][..., n - k :]
    above = magnitude > t
    tied = magnitude == t
    room = k - ops.sum(ops.cast(above, "int32"), axis=-1, keepdims=True)
    tie_rank = ops.cumsum(ops.cast(tied, "int32"), axis=-1)
    return ops.logical_or(above, ops.logical_and(tied, tie_rank <= room))


def keep_largest_in_rows(rows, k):
    """`rows` with all but the `k` largest magnitudes of each row set to 0."""
    n = rows.shape[-1]
    if k >= n:
        return rows
    if k == 0:
        return ops.zeros_like(rows)
    keep = keep_largest(ops.abs(rows), k)
    return ops.where(keep, rows, ops.zeros_like(rows))
