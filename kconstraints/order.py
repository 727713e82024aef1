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

from kconstraints._base import Constraint, register
from kconstraints._checks import check_bool, check_one_axis, resolve_axis
from kconstraints._tensors import cumsum_last, slices_as_rows, upcast

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


def isotonic_rows(x):
    """The non-decreasing least-squares fit of each row of `x`, exact.

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


@register
class Monotonic(Constraint):
    """Ordered entries: the projection onto non-decreasing (or non-increasing) sequences.

    The set is `{w : w_1 <= w_2 <= ... <= w_n}` along `axis`, for every slice
    (`>=` when `increasing=False`), and `P(w)` is the isotonic regression of
    each slice: runs that break the order are pooled into their mean,
    `P(w)_i = max_{j <= i} min_{k >= i} mean(w_j, ..., w_k)`. It is computed
    exactly, as the slopes of the lower convex hull of the cumulative sums,
    with fixed shapes and no data-dependent loop, so it compiles under JAX
    jit, TF XLA and torch.compile. Cost per slice of n entries: O(n^2) time
    and O(n^2) memory, taken in chunks of at most 2**23 pairs of entries,
    O(log n) depth. Sums are taken in float32 for float16/bfloat16 weights.

    Args:
        axis: the one axis along which entries are ordered (see the module
            docstring): `0` orders each unit's incoming weights in a Dense
            kernel `(input_dim, units)`, `-1` orders across units; `0` orders
            the rows of each filter of a Conv2D kernel
            `(rows, cols, in_channels, filters)`.
        increasing: True for non-decreasing, False for non-increasing.

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

    def __init__(self, axis=0, increasing=True):
        self.axis = check_one_axis(self._owner, "axis", axis)
        self.increasing = check_bool(self._owner, "increasing", increasing)

    def project(self, w):
        sign = 1.0 if self.increasing else -1.0
        x = upcast(w) * sign
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        return restore(isotonic_rows(rows)) * sign
