"""Affine sets: each slice along `axis` held on a hyperplane, in a half-space, or on `A w = b`.

A slice is the entries of the weight that share their index on every axis
not in `axis`; for a Dense kernel `(input_dim, units)`, `axis=0` makes the
incoming weights of each unit a slice, and for a Conv2D kernel
`(rows, cols, in_channels, filters)`, `axis=[0, 1, 2]` makes each filter
one, and `axis=[0, 1]` each 2-D kernel of an (input, output) channel pair.
When `axis` names several axes, a slice is read as one vector in row-major
order of those axes, taken in increasing order (`axis=[2, 0]` is the same
as `[0, 2]`). A `normal` (or a row of `matrix`) is given either with the
slice's shape, e.g. `(rows, cols)` for `axis=[0, 1]` of a Conv2D kernel, or
flat, with its entries in that order; it is checked against the slice when
the constraint first sees the weight. Arrays are stored in the config as
lists, so they survive `.keras` save and load.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import (
    check_axis,
    check_full_row_rank,
    check_normal,
    check_number,
    check_rank,
    check_slice_shape,
    check_system,
    resolve_axis,
)
from kconstraints._constants import MACHINE_EPSILON
from kconstraints._registry import affine_rows, bayar_system, fan_in, fan_in_normal, register
from kconstraints._tensors import Constant, mean, slices_as_rows, upcast

__all__ = ["AffineSet", "CenterAround", "Halfspace", "Hyperplane", "Radial"]


@register(
    family="slice",
    convex=True,
    exact=True,
    summary="mean(w, axis) = ref_value",
    examples=lambda shape: CenterAround(0.0, axis=0 if len(shape) == 3 else None),
    uses="weights on an affine set: zero mean, a fixed sum, linear equalities ([guide](guides/affine-sets.md))",
)
class CenterAround(Constraint):
    """Fixed mean: the projection onto `{w : mean(w_slice) = ref_value}`.

    The set is affine, so the Euclidean projection is exact and closed form:
    `P(w) = w - mean(w, axis) + ref_value`, each slice shifted by one number.

    Args:
        ref_value: the mean every slice is held at.
        axis: the axes the mean is taken over; `None` (default) is the whole
            tensor. For a Dense kernel of shape `(input_dim, units)`,
            `axis=0` centres the incoming weights of each unit; for a Conv2D
            kernel `(rows, cols, in, out)`, `axis=[0, 1, 2]` centres each
            filter. An int, a list/tuple of ints, and negative axes work.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 6.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.CenterAround(0.0, axis=0)(w)).tolist()
    [[-1.0, -2.0], [1.0, 2.0]]
    """

    def __init__(self, ref_value=0.0, axis=None):
        self.ref_value = check_number(self._owner, "ref_value", ref_value)
        self.axis = check_axis(self._owner, "axis", axis)

    def project(self, w):
        x = upcast(w)
        return x - mean(x, resolve_axis(self._owner, "axis", self.axis, x.shape)) + self.ref_value


class _SliceAffine(Constraint):
    """Shared: each slice along `axis` as a row of a matrix, in the weight's compute dtype."""

    def _rows(self, w, name, given):
        """The slices as rows and the inverse; `given` (an array's shape, or None) checked."""
        x = upcast(w)
        axes = resolve_axis(self._owner, "axis", self.axis, x.shape)
        if given is not None:
            check_slice_shape(self._owner, name, given, axes, tuple(x.shape))
        return slices_as_rows(x, axes)


class _Normal(_SliceAffine):
    """Shared by Hyperplane and Halfspace: `a / ||a||^2`, and `<a, w_slice> - b` per slice."""

    def _set_normal(self, normal, offset, axis):
        self.normal = check_normal(self._owner, "normal", normal)
        self.offset = check_number(self._owner, "offset", offset)
        self.axis = check_axis(self._owner, "axis", axis)
        if self.normal is not None:
            a = self.normal.reshape(-1)
            self._a = Constant(a)
            self._a_scaled = Constant(a / np.dot(a, a))

    def _residual(self, w):
        """The slices as rows, the inverse, `<a, row> - b` per row, and `a / ||a||^2`."""
        if self.normal is None:  # all ones: `a / ||a||^2` is `1 / n`
            rows, restore = self._rows(w, "normal", None)
            residual = ops.sum(rows, axis=-1, keepdims=True) - self.offset
            return rows, restore, residual, 1.0 / rows.shape[-1]
        rows, restore = self._rows(w, "normal", self.normal.shape)
        residual = ops.sum(rows * self._a.as_dtype_of(rows), axis=-1, keepdims=True) - self.offset
        return rows, restore, residual, self._a_scaled.as_dtype_of(rows)


@register(
    family="slice",
    convex=True,
    exact=True,
    summary="⟨a, slice⟩ = offset (`normal=None`: sum(slice) = offset); exact, closed form",
    examples=lambda shape: Hyperplane(fan_in_normal(shape), 1.0, axis=fan_in(shape)),
    uses="weights on an affine set: zero mean, a fixed sum, linear equalities ([guide](guides/affine-sets.md))",
)
class Hyperplane(_Normal):
    """Hyperplane: the projection onto `{w : <a, w_slice> = offset}` for every slice.

    `P(w) = w - (<a, w> - offset) / ||a||^2 * a` per slice: exact, closed
    form, one dot product a slice. With `normal=None` the normal is all
    ones and the set is `{w : sum(w_slice) = offset}` (zero-sum filters for
    `offset=0`, like `CenterAround(offset / n)`).

    Args:
        normal: the vector `a` (not all zero): of the slice's shape, or flat
            (see the module docstring); `None` (default) is all ones.
        offset: the value `b` of `<a, w_slice>`.
        axis: the axes that form a slice: `0` for the incoming weights of
            each unit of a Dense kernel `(input_dim, units)`, `[0, 1, 2]`
            for each filter of a Conv2D kernel `(rows, cols, in, filters)`;
            `None` is the whole tensor.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 6.0]])
    >>> c = kconstraints.Hyperplane(normal=[1.0, -1.0], offset=0.0, axis=0)
    >>> keras.ops.convert_to_numpy(c(w)).tolist()
    [[2.0, 4.0], [2.0, 4.0]]
    """

    def __init__(self, normal=None, offset=0.0, axis=0):
        self._set_normal(normal, offset, axis)

    def project(self, w):
        rows, restore, residual, a_scaled = self._residual(w)
        return restore(rows - residual * a_scaled)


@register(
    family="slice",
    convex=True,
    exact=True,
    summary="⟨a, slice⟩ <= offset; exact, closed form",
    examples=lambda shape: Halfspace(fan_in_normal(shape), -2.0, axis=fan_in(shape)),
    uses="a linear inequality on each slice",
)
class Halfspace(_Normal):
    """Half-space: the projection onto `{w : <a, w_slice> <= offset}` for every slice.

    A slice inside is returned unchanged; outside,
    `P(w) = w - (<a, w> - offset) / ||a||^2 * a`, the nearest point of the
    bounding hyperplane. Exact, closed form, one dot product a slice.

    Args:
        normal: the vector `a` (not all zero): of the slice's shape, or flat
            (see the module docstring); `None` is all ones, i.e.
            `sum(w_slice) <= offset`.
        offset: the bound `b`.
        axis: the axes that form a slice: `0` for the incoming weights of
            each unit of a Dense kernel `(input_dim, units)`, `[0, 1, 2]`
            for each filter of a Conv2D kernel `(rows, cols, in, filters)`;
            `None` is the whole tensor.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, -2.0], [3.0, 0.0]])
    >>> c = kconstraints.Halfspace(normal=[1.0, 1.0], offset=2.0, axis=0)
    >>> keras.ops.convert_to_numpy(c(w)).tolist()
    [[0.0, -2.0], [2.0, 0.0]]
    """

    def __init__(self, normal, offset=0.0, axis=0):
        self._set_normal(normal, offset, axis)

    def project(self, w):
        rows, restore, residual, a_scaled = self._residual(w)
        return restore(ops.where(residual > 0, rows - residual * a_scaled, rows))


# Up to this many basis vectors, one product and sum each; more, two matmuls.
_LOOPED = 16


@register(
    family="slice",
    convex=True,
    exact=True,
    summary=(
        "A · slice = b for a full-row-rank A (the Bayar convolution: centre tap -1, "
        "the others summing to 1); exact, A factored once"
    ),
    # Conv2D kernels of 3 x 3 taps: Bayar's system on each tap kernel.
    examples=lambda shape: (
        AffineSet(*bayar_system(), axis=[0, 1])
        if len(shape) == 4 and tuple(shape[:2]) == (3, 3)
        else AffineSet(*affine_rows(shape), axis=fan_in(shape))
    ),
    uses="weights on an affine set: zero mean, a fixed sum, linear equalities ([guide](guides/affine-sets.md))",
)
class AffineSet(_SliceAffine):
    """Affine set: the projection onto `{w : A w_slice = b}` for every slice.

    `P(w) = w - A^T (A A^T)^{-1} (A w - b)` per slice, exact and closed
    form. `A` is factored once, in float64, when the constraint is made: its
    SVD gives an orthonormal basis `Q` of its row space (or `N` of its null
    space, whichever is smaller) and the least-norm solution `x0 = A^+ b`,
    so `P(w) = w - (w - x0) Q Q^T = x0 + (w - x0) N N^T`: one dot product
    per basis vector and slice (two matmuls past 16 of them). A square
    full-rank `A` makes the set the single point `x0`. A rank-deficient `A` is an error that names its rank, and says
    whether `A w = b` has a solution at all (the residual of `x0`).

    Args:
        matrix: `A`, of shape `(rows, n)` (each row flat, see the module
            docstring) or `(rows, *slice shape)`, of full row rank.
        offset: `b`: a number for every row, or one number per row.
        axis: the axes that form a slice: `0` for the incoming weights of
            each unit of a Dense kernel `(input_dim, units)`, `[0, 1]` for
            each 2-D kernel of a Conv2D kernel `(rows, cols, in, filters)`.

    Example:

    >>> import keras, kconstraints
    >>> # the first entry 1, the other two summing to 0
    >>> c = kconstraints.AffineSet([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], offset=[1.0, 0.0])
    >>> w = keras.ops.convert_to_tensor([[3.0], [2.0], [4.0]])
    >>> keras.ops.convert_to_numpy(c(w)).round(3).tolist()
    [[1.0], [-1.0], [1.0]]
    """

    def __init__(self, matrix, offset=0.0, axis=0):
        self.matrix, self.offset = check_system(self._owner, matrix, offset)
        self.axis = check_axis(self._owner, "axis", axis)
        flat = self.matrix.reshape(self.matrix.shape[0], -1)
        k, n = flat.shape
        b = np.broadcast_to(self.offset, (k,))
        u, s, vt = np.linalg.svd(flat, full_matrices=True)
        rank = int(np.sum(s > s[0] * max(k, n) * MACHINE_EPSILON["float64"]))
        x0 = vt[:rank].T @ ((u[:, :rank].T @ b) / s[:rank])
        check_full_row_rank(self._owner, rank, flat, x0, b)
        self._x0 = Constant(x0)
        # The smaller basis: the row space (k columns) or the null space (n - k columns).
        self._remove = k <= n - k
        basis = vt[:k] if self._remove else vt[k:]
        self._basis = [Constant(row) for row in basis] if len(basis) <= _LOOPED else []
        self._basis_matrix = Constant(np.ascontiguousarray(basis.T)) if len(basis) else None
        self._basis_matrix_t = Constant(basis) if len(basis) else None

    def project(self, w):
        rows, restore = self._rows(w, "matrix", self.matrix.shape[1:])
        x0 = self._x0.as_dtype_of(rows)
        if self._basis_matrix is None:  # a single point
            return restore(ops.zeros_like(rows) + x0)
        centred = rows - x0
        if self._basis:
            # A product and a sum per basis vector rather than a matmul: on
            # GPUs XLA may run float32 matmuls in TF32 (10-bit mantissa), which
            # would leave `A w = b` off by ~1e-3 (not verified on a GPU here).
            part = ops.zeros_like(rows)
            for q in self._basis:
                q = q.as_dtype_of(rows)
                part = part + ops.sum(centred * q, axis=-1, keepdims=True) * q
        else:
            part = (centred @ self._basis_matrix.as_dtype_of(rows)) @ (
                self._basis_matrix_t.as_dtype_of(rows)
            )
        return restore(rows - part if self._remove else x0 + part)


def _rings(spatial):
    """The taps of a kernel of `spatial` shape (flat, C order) grouped by distance to its centre.

    Along an axis of n taps, tap i lies `(2 i - (n - 1)) / 2` from the centre
    `(n - 1) / 2`: the doubled offsets are integers, so the squared distances
    compare exactly. Rings in increasing distance, each in tap order. Plain
    loops over ints: torch.compile traces them without a break.
    """
    rings = {}
    for tap in range(math.prod(spatial)):
        rest, doubled = tap, 0
        for n in reversed(spatial):
            rest, i = divmod(rest, n)
            doubled += (2 * i - (n - 1)) ** 2
        rings.setdefault(doubled, []).append(tap)
    return [rings[d] for d in sorted(rings)]


@register(
    family="matrix",
    convex=True,
    exact=True,
    summary=(
        "Conv1D/2D/3D kernels equal on each ring of taps at one distance from the centre, "
        "per (in, out) channel pair; exact: each ring's mean"
    ),
    # Conv kernels only: a Dense kernel has no taps.
    examples=lambda shape: Radial() if 3 <= len(shape) <= 5 else None,
    shape=(3, 3, 2, 4),
    uses="radially symmetric (rotation-invariant) convolution filters",
)
class Radial(Constraint):
    """Radial: the projection onto Conv kernels that are equal on each ring of taps around the centre.

    For a Conv2D kernel `(rows, cols, in_channels, filters)`, taps `(i, j)`
    and `(i', j')` share a ring when they lie at the same Euclidean distance
    from the centre `((rows - 1) / 2, (cols - 1) / 2)`, i.e. have the same
    `(2i - rows + 1)^2 + (2j - cols + 1)^2`. The set (the kernel equal on
    each ring, for every (in, out) channel pair) is a subspace, so the
    projection is exact and closed form: each entry becomes its ring's mean.
    3x3: the centre, the 4 edge and the 4 corner taps; 5x5: six rings. Even
    sizes have no centre tap: 2x2 is one ring, 4x4 the inner 4, the 8 taps
    around them and the 4 corners. `rows != cols` works alike. Some rings
    join taps of two patterns: (5, 0) and (3, 4) from the centre of an
    11x11, (0.5, 3.5) and (2.5, 2.5) of an 8x8, (1, 0) and (0, 1) of a 3x5.
    Conv1D `(width, in, out)`: the mirror pairs `i` and `width - 1 - i`;
    Conv3D: spherical shells. A radial kernel comes back bit for bit; other
    ranks are an error naming the shape.

    tf.keras 2's `RadialConstraint` (gone from Keras 3) copied one tap onto
    each square ring (one Chebyshev distance) of a square Conv2D kernel: not
    a projection, and a smaller set up to 7x7 (3x3: the centre and the 8
    taps around it equal).

    Example:

    >>> import numpy as np, keras, kconstraints
    >>> k = np.array([[1.0, 2.0, 0.0], [4.0, 5.0, 6.0], [3.0, 0.0, 1.0]]).reshape(3, 3, 1, 1)
    >>> out = kconstraints.Radial()(keras.ops.convert_to_tensor(k))
    >>> keras.ops.convert_to_numpy(out)[:, :, 0, 0].astype(float).tolist()
    [[1.25, 3.0, 1.25], [3.0, 5.0, 3.0], [1.25, 3.0, 1.25]]
    """

    def project(self, w):
        shape = tuple(w.shape)
        what = "a Conv1D/2D/3D kernel (*spatial, in_channels, filters)"
        check_rank(self._owner, shape, what, low=3, high=5)
        taps = ops.reshape(upcast(w), (math.prod(shape[:-2]), shape[-2] * shape[-1]))
        out = [None] * taps.shape[0]
        for ring in _rings(shape[:-2]):
            # The mean as the first tap plus the mean offset from it: a ring of
            # equal taps keeps them bit for bit. A static sum, no matmul (which
            # XLA may run in TF32 on a GPU, see AffineSet).
            first = level = taps[ring[0]]
            if len(ring) > 1:
                spread = taps[ring[1]] - first
                for tap in ring[2:]:
                    spread = spread + (taps[tap] - first)
                level = first + spread / len(ring)
            for tap in ring:
                out[tap] = level
        return ops.reshape(ops.stack(out), shape)
