"""Sparsity: at most k nonzeros per slice (magnitude pruning), the N:M pattern, the sparse simplex.

The sets are not convex. The first two are unions of subspaces: their
projection keeps the entries of largest magnitude and zeroes the rest; the
sparse simplex keeps the largest entries (by value) and projects them onto
the simplex. When several entries tie at the last magnitude (value) kept,
the one with the lower index in the slice (or group) wins, on every
backend: the result never depends on how a backend's sort orders equal
keys. For the axes, see `norm.py`.
"""

from __future__ import annotations

import math

from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import (
    check_at_most,
    check_axis,
    check_count_fits,
    check_groups_fit,
    check_int,
    check_k_or_density,
    check_number,
    check_one_axis,
    resolve_axis,
)
from kconstraints._constants import FLOAT64_PRODUCT_SLACK
from kconstraints._kernels import keep_largest, keep_largest_in_rows, simplex_projection
from kconstraints._registry import fan_in, register, two_four_axis
from kconstraints._tensors import slices_as_rows, upcast

__all__ = ["NM", "SparseSimplex", "TopK"]


def _count_for_density(density, n):
    """The number of entries kept of `n` for a `density`: the nearest integer, halves up, at least 1."""
    # The slack absorbs the rounding of `density * n` (0.145 * 100 = 14.499999999999998, a half that must round up).
    return max(1, min(n, math.floor(density * n + 0.5 + FLOAT64_PRODUCT_SLACK)))


@register(
    family="slice",
    convex=False,
    exact=True,
    summary=(
        "at most k nonzeros per slice (or the fraction `density`): magnitude pruning, ties to "
        "the lower index; `callbacks.SparsitySchedule` raises the sparsity during `fit()`"
    ),
    examples=lambda shape: TopK(density=0.5),
    uses="magnitude pruning, raised during `fit()` by `callbacks.SparsitySchedule` ([guide](guides/pruning.md))",
)
class TopK(Constraint):
    """Top-k: the projection onto `{w : w_slice has at most k nonzero entries}`.

    `P(w)` keeps the `k` entries of largest magnitude of each slice and sets
    the others to 0: magnitude pruning, the nearest point of the set in the
    Euclidean norm. Ties at the k-th magnitude keep the entries of lower
    index in the slice (C order), on every backend. The set is not convex.

    Args:
        k: the number of entries kept per slice (an int >= 0; `0` zeroes the
            weight). It may not exceed the length of a slice: that is an
            error naming both numbers when the weight is first projected.
        density: instead of `k`, the fraction kept, in (0, 1]: `k` is
            `density * n` for slices of `n` entries, rounded to the nearest
            integer (halves up), and at least 1. Pass exactly one of the two.
        axis: the axes that form a slice: `None` (the default) prunes the
            whole tensor at once; for a Dense kernel `(input_dim, units)`,
            `axis=0` keeps `k` incoming weights per unit; for a Conv2D kernel
            `(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]` keeps `k`
            per filter.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.5, -2.0], [1.0, 0.5], [-1.0, 0.1]])
    >>> keras.ops.convert_to_numpy(kconstraints.TopK(k=1, axis=0)(w)).tolist()
    [[0.0, -2.0], [1.0, 0.0], [0.0, 0.0]]

    `callbacks.SparsitySchedule` raises the sparsity of `TopK` weights over
    training. Costs: [docs/benchmarks.md](../benchmarks.md).
    """

    def __init__(self, k=None, density=None, axis=None):
        self.k, self.density = check_k_or_density(self._owner, k, density)
        self.axis = check_axis(self._owner, "axis", axis)

    def count(self, shape):
        """The number of entries kept per slice for a weight of `shape`."""
        axes = resolve_axis(self._owner, "axis", self.axis, shape)
        n = math.prod([shape[a] for a in axes])
        if self.k is None:
            return _count_for_density(self.density, n)
        check_count_fits(self._owner, self.k, n, self.axis, shape)
        return self.k

    def project(self, w):
        x = upcast(w)
        k = self.count(x.shape)
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        return restore(keep_largest_in_rows(rows, k))


@register(
    family="slice",
    convex=False,
    exact=True,
    summary=(
        "at most n nonzeros in every group of m consecutive entries along `axis` "
        "(`NM(2, 4)`: the 2:4 pattern of sparse tensor cores)"
    ),
    # Along the first input axis of a multiple of 4 entries; a kernel with
    # none keeps 2 of each whole column instead.
    examples=lambda shape: (
        NM(2, 4, axis=two_four_axis(shape))
        if two_four_axis(shape) is not None
        else NM(2, shape[0], axis=0)
    ),
    uses="2:4 (N:M) structured sparsity ([guide](guides/pruning.md))",
)
class NM(Constraint):
    """N:M sparsity: at most `n` nonzeros in every group of `m` consecutive entries along `axis`.

    The weight's length along `axis` is cut into groups of `m` consecutive
    entries; `P(w)` keeps the `n` entries of largest magnitude of each group
    and sets the others to 0 (ties: the lower index wins). `NM(2, 4)` on a
    Dense kernel `(input_dim, units)` is the 2:4 pattern that the sparse
    tensor cores of NVIDIA GPUs (Ampere and later) accelerate: groups of 4
    along the input dimension (Mishra et al. 2021, "Accelerating Sparse Deep
    Neural Networks"; Zhou et al. 2021, "Learning N:M Fine-grained
    Structured Sparse Neural Networks From Scratch"). The set is not convex.

    Args:
        n: the entries kept per group (1 <= n <= m).
        m: the size of a group. The weight's length along `axis` must be a
            multiple of `m`: otherwise an error names both when the weight
            is first projected.
        axis: the one axis the groups run along: `0`, the input dimension of
            a Dense kernel; for a Conv2D kernel `(rows, cols, in_channels,
            filters)`, `axis=2` (the input channels) is the layout of
            the sparse tensor cores.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.1], [-3.0], [2.0], [0.5], [1.0], [1.0], [1.0], [-4.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.NM(2, 4)(w)).ravel().tolist()
    [0.0, -3.0, 2.0, 0.0, 1.0, 0.0, 0.0, -4.0]
    """

    def __init__(self, n=2, m=4, axis=0):
        self.n = check_int(self._owner, "n", n, low=1)
        self.m = check_int(self._owner, "m", m, low=1)
        check_at_most(self._owner, "n", n, "m", m)
        self.axis = check_one_axis(self._owner, "axis", axis)

    def project(self, w):
        x = upcast(w)
        (axis,) = resolve_axis(self._owner, "axis", self.axis, x.shape)
        check_groups_fit(self._owner, self.axis, self.m, tuple(x.shape), axis)
        rows, restore = slices_as_rows(x, (axis,))
        groups = ops.reshape(rows, (-1, self.m))
        return restore(ops.reshape(keep_largest_in_rows(groups, self.n), rows.shape))


@register(
    family="slice",
    convex=False,
    exact=True,
    summary=(
        "at most k nonzeros per slice, all >= 0 and summing to `total`: the k largest "
        "entries projected onto the simplex (Kyrillidis et al. 2013)"
    ),
    examples=lambda shape: SparseSimplex(2, axis=fan_in(shape)),
    uses="sparse mixture or attention weights: at most k nonzeros summing to 1",
)
class SparseSimplex(Constraint):
    """Sparse simplex: the projection onto `{w : w_slice >= 0, sum(w_slice) = total, <= k nonzeros}`.

    `P(w)` keeps the `k` largest entries of each slice (by value, not
    magnitude: a large negative entry is never kept), projects those onto
    the simplex `{z >= 0, sum(z) = total}` as `Simplex` does, and sets the
    others to 0. That is the exact Euclidean projection (Kyrillidis, Becker,
    Cevher & Koch 2013, "Sparse projections onto the simplex", ICML,
    Theorem 1). Ties at the k-th value keep the entries of lower index in
    the slice (C order), on every backend, as `TopK` does. The result may
    have fewer than k nonzeros (the simplex step zeroes kept entries far
    below the top); `k` equal to a slice's length is `Simplex`. Not convex.

    Args:
        k: the most nonzeros per slice (an int >= 1). It may not exceed the
            length of a slice: that is an error naming both numbers when the
            weight is first projected.
        total: the sum of every slice (>= 0).
        axis: the axes that form a slice: for a Dense kernel `(input_dim,
            units)`, `axis=0` makes the incoming weights of each unit a
            mixture of at most k inputs; for a Conv2D kernel `(rows, cols,
            in_channels, filters)`, `axis=[0, 1, 2]` does it for each filter.
            `None` is the whole tensor.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[0.9, 0.2], [0.6, -1.0], [-2.0, 0.1], [0.5, 0.3]])
    >>> out = kconstraints.SparseSimplex(2, axis=0)(w)
    >>> keras.ops.convert_to_numpy(out).astype(float).round(3).tolist()
    [[0.65, 0.45], [0.35, 0.0], [0.0, 0.0], [0.0, 0.55]]
    """

    def __init__(self, k, total=1.0, axis=0):
        self.k = check_int(self._owner, "k", k, low=1)
        self.total = check_number(self._owner, "total", total, low=0)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x = upcast(w)
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        check_count_fits(self._owner, self.k, rows.shape[-1], self.axis, tuple(x.shape))
        if self.k < rows.shape[-1]:
            # Kyrillidis et al. (2013), Thm 1: the support is among the k largest
            # entries. The others, at -inf, lie below every threshold: they come out 0.
            lowest = ops.convert_to_tensor(-math.inf, dtype=rows.dtype)
            rows = ops.where(keep_largest(rows, self.k), rows, lowest)
        return restore(simplex_projection(rows, self.total))
