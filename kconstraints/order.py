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

from kconstraints._backend import fori_loop
from kconstraints._base import Constraint
from kconstraints._checks import check_bool, check_choice, check_one_axis, resolve_axis
from kconstraints._registry import register
from kconstraints._tensors import clamp, cumsum_last, slices_as_rows, upcast

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


@register(
    family="slice",
    convex=True,
    exact=True,
    summary=(
        "slice non-decreasing (or non-increasing) along `axis`: exact isotonic regression, "
        "O(n log^2 n) for long slices"
    ),
    examples=lambda shape: Monotonic(axis=0),
)
class Monotonic(Constraint):
    """Ordered entries: the projection onto non-decreasing (or non-increasing) sequences.

    The set is `{w : w_1 <= w_2 <= ... <= w_n}` along `axis`, for every slice
    (`>=` when `increasing=False`), and `P(w)` is the isotonic regression of
    each slice: runs that break the order are pooled into their mean,
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

    Returns:
        A tensor of the weight's shape and dtype.

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
