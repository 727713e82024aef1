"""The simplex and the L1 ball: exact projections of each slice through one soft threshold.

Both projections shift or shrink every entry of a slice by one number
`theta`, found exactly from the sorted slice. For the axes, see `norm.py`:
`axis=0` is each unit's incoming weights in a Dense kernel
`(input_dim, units)`, `[0, 1, 2]` each filter of a Conv2D kernel.
"""

from __future__ import annotations

from keras import ops

from kconstraints._base import Constraint, register
from kconstraints._checks import check_axis, check_number, resolve_axis
from kconstraints._tensors import cumsum_last, slices_as_rows, upcast


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


class _SliceThreshold(Constraint):
    """Shared: each slice along `axis` as a row, in the weight's compute dtype."""

    def _rows(self, w):
        x = upcast(w)
        return slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))


@register
class Simplex(_SliceThreshold):
    """Simplex: the projection onto `{w : w >= 0, sum(w_slice) = total}`.

    `P(w) = max(w - theta, 0)` per slice, where the scalar `theta` solves
    `sum(max(w - theta, 0)) = total`; it is found exactly by one sort of the
    slice, O(n log n), and is correct on ties, zeros and feasible slices
    (Duchi et al. 2008). An all-zero slice becomes the uniform `total / n`.

    Args:
        total: the sum of every slice (>= 0); `total=1` gives mixture or
            attention weights.
        axis: the axes that form a slice: for a Dense kernel of shape
            `(input_dim, units)`, `axis=0` makes the incoming weights of each
            unit a convex combination and `axis=-1` does it for the outgoing
            weights of each input; for a Conv2D kernel
            `(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]` makes each
            filter sum to `total`. `None` is the whole tensor.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.2, 3.0], [0.5, 0.0], [0.9, -1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Simplex(axis=0)(w)).astype(float).round(3).tolist()
    [[0.0, 1.0], [0.3, 0.0], [0.7, 0.0]]
    """

    def __init__(self, total=1.0, axis=0):
        self.total = check_number(self._owner, "total", total, low=0)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        rows, restore = self._rows(w)
        shifted = rows - simplex_threshold(rows, self.total)
        return restore(ops.where(shifted < 0, ops.zeros_like(shifted), shifted))


@register
class L1Ball(_SliceThreshold):
    """L1 ball: the projection onto `{w : ||w_slice||_1 <= radius}`.

    A slice inside the ball is returned unchanged. Outside,
    `P(w) = sign(w) * max(|w| - theta, 0)`: the soft threshold whose `theta > 0`
    makes `||P(w)||_1 = radius`, i.e. the simplex projection of `|w|`
    (Duchi et al. 2008), found exactly by one sort, O(n log n) a slice. The
    result is sparse: entries below `theta` in magnitude become 0.

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
        rows, restore = self._rows(w)
        magnitude = ops.abs(rows)
        theta = simplex_threshold(magnitude, self.radius)
        # theta <= 0 exactly when the slice is inside the ball: keep it bit for bit.
        shrunk = magnitude - theta
        shrunk = ops.where(shrunk > 0, ops.sign(rows) * shrunk, ops.zeros_like(shrunk))
        return restore(ops.where(theta > 0, shrunk, rows))
