"""Order constraints: each slice along `axis` is a sequence held in order.

For a Dense kernel of shape `(input_dim, units)`, `axis=0` orders the
incoming weights of each unit along the input index (inputs with a natural
order: lags, doses, ranks) and `axis=1` orders the weights of the units for
each input. For a Conv2D kernel `(rows, cols, in_channels, filters)`,
`axis=0` orders each column of every filter from top to bottom. For a bias of
shape `(units,)`, `axis=0` makes the biases increasing cut points (ordinal
regression).
"""

from __future__ import annotations

import math

from keras import ops

from kconstraints import _kernels
from kconstraints._base import Constraint
from kconstraints._checks import check_bool, check_choice, check_one_axis, resolve_axis
from kconstraints._kernels import isotonic_rows
from kconstraints._registry import register
from kconstraints._tensors import cumsum_last, safe_divisor, slices_as_rows, upcast

__all__ = ["Monotonic", "Unimodal"]


@register(
    family="slice",
    convex=True,
    exact=True,
    summary=(
        "slice non-decreasing (or non-increasing) along `axis`: exact isotonic regression, "
        "O(n log^2 n) for long slices"
    ),
    examples=lambda shape: Monotonic(axis=0),
    uses="ordered weights along an axis (cut points, quantiles); for a network monotone in its inputs, see `L1Ball`",
)
class Monotonic(Constraint):
    """Ordered entries: the projection onto non-decreasing (or non-increasing) sequences.

    The set is `{w : w_1 <= w_2 <= ... <= w_n}` along `axis`, for every slice
    (`>=` when `increasing=False`): ordered weights (cut points, quantiles),
    not a model monotone in its inputs, which is `L1Ball(c, axis=1)` on every
    kernel plus a residual (docs/guides/monotone-network.md). `P(w)` is the
    isotonic regression of each slice: runs that break the order are pooled
    into their mean,
    `P(w)_i = max_{j <= i} min_{k >= i} mean(w_j, ..., w_k)`. It is computed
    exactly, as the slopes of the lower convex hull of the cumulative sums,
    with fixed shapes and no data-dependent loop, so it compiles under JAX
    jit, TF XLA and torch.compile. `method="pairwise"` forms every chord of a
    slice of n entries at once: O(n^2) time and memory (in chunks of at most
    2**23 pairs), O(log n) depth. `method="merge"` fits blocks of 1, 2, 4, ...
    entries, each from its two sorted halves: O(n log^2 n) time, O(n)
    memory, O(log^2 n) depth. `"auto"` takes the pairwise hull for slices of
    up to 64 entries and the merge above. Sums are taken in float32 for
    float16/bfloat16 weights. Costs: [benchmarks](../benchmarks.md).

    Args:
        axis: the one axis along which entries are ordered (see the module
            docstring): `0` orders each unit's incoming weights in a Dense
            kernel `(input_dim, units)`, `-1` orders across units; `0` orders
            the rows of each filter of a Conv2D kernel
            `(rows, cols, in_channels, filters)`.
        increasing: True for non-decreasing, False for non-increasing.
        method: `"auto"`, `"pairwise"` or `"merge"` (same result, up to rounding).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Monotonic(axis=0)(w)).astype(float).round(3).tolist()
    [[2.0, 1.0], [2.0, 2.0], [2.0, 3.0]]
    >>> cuts = keras.ops.convert_to_tensor([0.0, 2.0, 1.0, 3.0])
    >>> keras.ops.convert_to_numpy(kconstraints.Monotonic()(cuts)).astype(float).round(3).tolist()
    [0.0, 1.5, 1.5, 3.0]
    """

    def __init__(self, axis=0, increasing=True, method="auto"):
        self.axis = check_one_axis(self._owner, "axis", axis)
        self.increasing = check_bool(self._owner, "increasing", increasing)
        self.method = check_choice(self._owner, "method", method, ("auto", "pairwise", "merge"))

    def project(self, w):
        sign = 1.0 if self.increasing else -1.0
        x = upcast(w) * sign
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        return restore(isotonic_rows(rows, self.method)) * sign


def _add_pairs(a, b):
    """`a + b` of two unevaluated sums `(high, low)`, as one: TwoSum (Knuth 1969), then renormalized.

    The sum of the errors along a chain keeps the small errors next to a
    large one (Dekker 1971): two splits that share a block of error 1 and
    differ by 1e-8 elsewhere are told apart in float32.
    """
    high = a[0] + b[0]
    back = high - a[0]
    low = (a[0] - (high - back)) + (b[0] - back) + (a[1] + b[1])
    total = high + low
    return total, low - (total - high)


def _prefix_fits(y, scale):
    """Every prefix's non-decreasing fit of each row of `y` `(R, n)`, as a tree of blocks.

    The fit of the prefix `y[:j]` is the left derivative of the greatest
    convex minorant of the cumulative sums `C_0 .. C_j` (Barlow et al.
    1972). Its last edge runs from the vertex `parent(j)`, the point `i < j`
    of the steepest chord `(C_j - C_i) / (j - i)`, and the rest is the hull
    of the prefix `y[:parent(j)]`: node j's block is `[parent(j), j)`, and the
    prefix's blocks are those of the chain `j, parent(j), ..., 0`. Returns
    `(ancestors, mean, flat, error)` per node `0..n`: its 2**k-th ancestors,
    the block's mean, whether its entries are all equal, and the squared
    error of the whole prefix fit as a pair `(high, low)` (`_add_pairs`),
    summed along the chain by pointer jumping (Wyllie 1979), with each
    block's error computed from its own entries (no cancellation against
    `sum(y**2)`), in units of `scale**2` (no overflow from entries of 1e20 in
    float32). Prefix errors by the hull are Stout's (2008) first step.
    """
    n = y.shape[-1]
    cumsums = ops.concatenate([ops.zeros_like(y[:, :1]), cumsum_last(y)], axis=-1)
    node = ops.arange(n + 1, dtype="int32")
    gap = ops.cast(node[None, :] - node[:, None], y.dtype)  # [i, j] -> j - i
    before = gap > 0
    chord = (cumsums[:, None, :] - cumsums[:, :, None]) / ops.where(before, gap, ops.ones_like(gap))
    lowest = ops.convert_to_tensor(-math.inf, dtype=y.dtype)
    chord = ops.where(before, chord, lowest)
    steepest = ops.amax(chord, axis=1, keepdims=True)
    # The last point of the steepest chords: collinear points stay vertices,
    # so an ordered run keeps blocks of one entry.
    at_max = ops.logical_and(before, chord == steepest)
    parent = ops.amax(ops.where(at_max, node[None, :, None], 0), axis=1)  # (R, n + 1)
    entry = node[:n]
    inside = ops.logical_and(entry[None, None, :] >= parent[:, :, None], entry < node[:, None])
    width = ops.cast(node[None, :] - parent, y.dtype)
    values = ops.where(inside, y[:, None, :], ops.zeros_like(inside, dtype=y.dtype))
    mean = ops.sum(values, axis=-1) / safe_divisor(width)
    highest = ops.convert_to_tensor(math.inf, dtype=y.dtype)
    top = ops.amax(ops.where(inside, y[:, None, :], lowest), axis=-1)
    flat = top == ops.amin(ops.where(inside, y[:, None, :], highest), axis=-1)
    mean = ops.where(flat, top, mean)
    deviation = ops.where(inside, y[:, None, :] - mean[:, :, None], ops.zeros_like(values))
    deviation = deviation / scale[:, :, None]
    error = ops.where(flat, ops.zeros_like(mean), ops.sum(deviation * deviation, axis=-1))
    # Pointer jumping: after step k, `error` sums 2**k nodes of each chain
    # and `ancestors[k]` is each node's 2**k-th ancestor (node 0 is its own).
    ancestors, error = [parent], (error, ops.zeros_like(error))
    for _ in range(n.bit_length()):
        up = ancestors[-1]
        error = _add_pairs(error, [ops.take_along_axis(e, up, axis=-1) for e in error])
        ancestors.append(ops.take_along_axis(up, up, axis=-1))
    return ancestors[:-1], mean, flat, error


def _fit_of_prefix(ancestors, mean, flat, x, shift, length):
    """Entry i of the fit of the prefix of `length` (per row): its chain's block over i.

    Binary lifting from node `length` down the chain to the last node above
    i, whose block holds i. Entries at or after `length` are not meaningful.
    """
    rows, n = x.shape
    entry = ops.arange(n, dtype="int32")[None, :]
    at = ops.broadcast_to(length, (rows, n))
    for up in reversed(ancestors):
        ahead = ops.take_along_axis(up, at, axis=-1)
        at = ops.where(ahead > entry, ahead, at)
    fitted = ops.take_along_axis(mean, at, axis=-1) + shift
    # Blocks of equal entries (one entry, a tie) are the entries: bit for bit.
    return ops.where(ops.take_along_axis(flat, at, axis=-1), x, fitted)


def _unimodal_chunk(x):
    """The unimodal fit (peak) of each row of `x`, by the best split of `_prefix_fits` both ways."""
    n = x.shape[-1]
    # Shifted by the row's mean, an offset of the entries (1e6 + noise) does
    # not swamp the cumulative sums and the errors: x - shift is exact near
    # the shift (Sterbenz 1974); the fit is equivariant to the shift.
    shift = ops.sum(x, axis=-1, keepdims=True) / n
    y = x - shift
    scale = safe_divisor(ops.amax(ops.abs(y), axis=-1, keepdims=True))
    # The non-increasing fit of a suffix is the reversed non-decreasing fit
    # of the reversed slice's prefix.
    ahead = _prefix_fits(y, scale)
    behind = _prefix_fits(ops.flip(y, axis=-1), scale)
    # Split m: the fit of y[:m + 1] rising, then of y[m + 1:] falling. The
    # least total error, compared as (high, low) pairs.
    high, low = _add_pairs(
        [e[:, 1:] for e in ahead[3]], [ops.flip(e[:, :n], axis=-1) for e in behind[3]]
    )
    split = ops.arange(n, dtype="int32")[None, :]
    tied = high == ops.amin(high, axis=-1, keepdims=True)
    inf = ops.convert_to_tensor(math.inf, dtype=x.dtype)
    low = ops.where(tied, low, inf)
    least = ops.logical_and(tied, low == ops.amin(low, axis=-1, keepdims=True))
    best = ops.amin(ops.where(least, split, n), axis=-1, keepdims=True)
    best = ops.where(best < n, best, n - 1)  # a non-finite row: any split, in range
    rise = _fit_of_prefix(*ahead[:3], x, shift, best + 1)
    fall = _fit_of_prefix(*behind[:3], ops.flip(x, axis=-1), shift, n - 1 - best)
    return ops.where(split <= best, rise, ops.flip(fall, axis=-1))


def _unimodal_rows(x):
    """`_unimodal_chunk` over chunks of rows, so the chords of a chunk stay under `PAIRS_PER_CHUNK`."""
    rows, n = x.shape
    per_chunk = max(1, _kernels.PAIRS_PER_CHUNK // ((n + 1) * (n + 1)))
    if rows <= per_chunk:
        return _unimodal_chunk(x)
    chunks = -(-rows // per_chunk)
    padded = ops.concatenate([x, ops.zeros((chunks * per_chunk - rows, n), dtype=x.dtype)])
    fits = ops.map(_unimodal_chunk, ops.reshape(padded, (chunks, per_chunk, n)))
    return ops.reshape(fits, (-1, n))[:rows]


@register(
    family="slice",
    convex=False,
    exact=True,
    summary=(
        "slice rising then falling (or falling then rising) along `axis`: exact unimodal "
        "regression, the best split of prefix isotonic fits, O(n^2) per slice"
    ),
    examples=lambda shape: Unimodal(axis=0),
    uses="a peaked (or valley-shaped) profile along an axis: a response curve, a tapered filter",
)
class Unimodal(Constraint):
    """Unimodal entries: the projection onto sequences that rise to a peak, then fall.

    The set is the union over m of `{w : w_1 <= ... <= w_m >= w_(m+1) >= ... >= w_n}`
    along `axis`, for every slice (a valley, falling then rising, when
    `peak=False`); it is not convex. `P(w)` is the unimodal regression of each
    slice (Stout 2008, "Unimodal regression via prefix isotonic regression"):
    over every split m, the non-decreasing isotonic fit of `w_1..w_m` and the
    non-increasing fit of `w_(m+1)..w_n`, taking the split of least squared
    error; where splits tie (the nearest point is not unique) the first of
    least computed error. Exact: every prefix's fit and error come from the
    hull of the cumulative sums (see `Monotonic`), all splits at once with
    fixed shapes, so it compiles under JAX jit, TF XLA and torch.compile:
    O(n^2) time and memory for a slice of n (in chunks of 2**23 chords). An
    ordered slice comes back bit for bit. Costs: [benchmarks](../benchmarks.md).

    Args:
        axis: the one axis along which each slice is unimodal (see the module
            docstring): `0` for each unit's incoming weights in a Dense kernel
            `(input_dim, units)`, `-1` across units; `0` for the rows of each
            filter of a Conv2D kernel `(rows, cols, in_channels, filters)`.
        peak: True for a peak (rise, then fall), False for a valley.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([1.0, 3.0, 2.0, 4.0, 0.0])
    >>> keras.ops.convert_to_numpy(kconstraints.Unimodal()(w)).astype(float).round(3).tolist()
    [1.0, 2.5, 2.5, 4.0, 0.0]
    >>> keras.ops.convert_to_numpy(kconstraints.Unimodal(peak=False)(w)).astype(float).round(3).tolist()
    [2.5, 2.5, 2.5, 2.5, 0.0]
    """

    def __init__(self, axis=0, peak=True):
        self.axis = check_one_axis(self._owner, "axis", axis)
        self.peak = check_bool(self._owner, "peak", peak)

    def project(self, w):
        sign = 1.0 if self.peak else -1.0
        x = upcast(w) * sign
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        return restore(_unimodal_rows(rows)) * sign
