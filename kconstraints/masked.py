"""Masked constraints: which entries are free, held at a value, or constrained.

A mask is an array of 0/1 (or booleans) of the weight's shape, or of a shape
that broadcasts to it. For a Dense kernel `(input_dim, units)`: the full
shape for a pattern per connection, `(1, units)` for one per unit,
`(input_dim, 1)` for one per input. For a Conv2D kernel
`(rows, cols, in_channels, filters)`: `(rows, cols, 1, 1)` for one spatial
pattern shared by every filter, `(1, 1, in_channels, filters)` for a
channel-connectivity table. Masks and values are stored in the config as
lists, so they survive `.keras` save and load.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import (
    check_array,
    check_broadcast,
    check_constraint,
    check_elementwise,
    check_fits,
    check_mask,
)
from kconstraints._registry import random_mask, register
from kconstraints._tensors import Constant
from kconstraints.bounds import NonNeg

__all__ = ["Fixed", "Mask", "Partial"]


class _Masked(Constraint):
    """Shared: a 0/1 `mask` checked in `__init__` and matched to the weight at call time."""

    elementwise = True

    def _set_mask(self, mask):
        self.mask = check_mask(self._owner, "mask", mask)
        self._mask_shape = tuple(self.mask.shape)
        # Made once, outside any trace, as float16 0/1 rather than booleans:
        # torch's CPU kernels read a boolean mask slowly (see _backend.py).
        self._mask_tensor = ops.convert_to_tensor((self.mask != 0).astype("float16"))

    def _where(self, w):
        check_fits(self._owner, "mask", self._mask_shape, tuple(w.shape))
        return ops.not_equal(self._mask_tensor, 0)


@register(
    family="elementwise",
    convex=True,
    exact=True,
    summary="w = 0 where mask = 0: a fixed connectivity or sparsity pattern",
    # The mask is a constant of the compiled program.
    examples=lambda shape: Mask(random_mask(shape)),
    uses="a fixed connectivity pattern, frozen entries ([guide](guides/fixed-weights.md))",
)
class Mask(_Masked):
    """Fixed sparsity pattern: entries where `mask` is 0 are held at 0.

    The set is the subspace `{w : w[mask == 0] = 0}` and the projection is
    `P(w) = w * mask`: a fixed connectivity (pruned, block-diagonal, local)
    that training can not grow back.

    Args:
        mask: 0/1 numbers or booleans, of the weight's shape or broadcastable
            to it (see the module docstring).

    Example:

    >>> import keras, kconstraints
    >>> c = kconstraints.Mask([[1, 0], [1, 1]])
    >>> layer = keras.layers.Dense(2, kernel_constraint=c)
    >>> w = keras.ops.convert_to_tensor([[0.5, 0.7], [-0.2, 0.3]])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.5, 0.0], [-0.2, 0.3]]
    """

    def __init__(self, mask):
        self._set_mask(mask)

    def project(self, w):
        return ops.where(self._where(w), w, ops.zeros_like(w))


@register(
    family="elementwise",
    convex=True,
    exact=True,
    summary="w = values where mask = 1, the rest free",
    examples=lambda shape: Fixed(random_mask(shape), values=0.5),
    uses="a fixed connectivity pattern, frozen entries ([guide](guides/fixed-weights.md))",
)
class Fixed(_Masked):
    """Frozen entries: where `mask` is 1 the weight is held at `values`; the rest is free.

    The set is the affine subspace `{w : w[mask == 1] = values[mask == 1]}`
    and the projection is `P(w) = where(mask, values, w)`.

    Args:
        mask: 0/1 numbers or booleans marking the frozen entries, of the
            weight's shape or broadcastable to it (see the module docstring).
        values: the values of the frozen entries: a number, or an array of
            the weight's shape (or broadcastable to it). Entries where `mask`
            is 0 are ignored.

    Example:

    >>> import keras, kconstraints
    >>> c = kconstraints.Fixed([[1, 0], [0, 1]], values=1.0)  # an identity diagonal
    >>> w = keras.ops.convert_to_tensor([[0.5, 0.7], [-0.2, 0.3]])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[1.0, 0.7], [-0.2, 1.0]]
    """

    def __init__(self, mask, values=0.0):
        self._set_mask(mask)
        self.values = check_array(self._owner, "values", values)
        self._values = Constant(np.asarray(self.values))
        check_broadcast(self._owner, "mask", self._mask_shape, "values", self._values.shape)

    def project(self, w):
        check_fits(self._owner, "values", self._values.shape, tuple(w.shape))
        return ops.where(self._where(w), self._values.as_dtype_of(w), w)


@register(
    family="elementwise",
    convex=True,
    exact=True,
    summary="an elementwise constraint applied only where mask = 1 (input-convex layers)",
    examples=lambda shape: Partial(NonNeg(), random_mask(shape)),
    uses="a constraint on part of a kernel",
)
class Partial(_Masked):
    """An elementwise constraint applied only where `mask` is 1; the rest is left free.

    With `C` the set of the inner constraint, the set is
    `{w : w[mask == 1] in C}` and, because the inner projection acts on each
    entry alone, `P(w) = where(mask, inner(w), w)`. This is what an
    input-convex network needs: `Partial(NonNeg(), mask)` on the kernel of a
    Dense layer fed by `concat([z, x])` keeps the z-path weights non-negative
    and leaves the pass-through x-path weights free. A constraint that acts
    on whole slices (`MaxNorm`, `Simplex`, ...) has no meaning on part of a
    slice and is refused.

    Args:
        constraint: an elementwise constraint (`NonNeg`, `Clip`, `Mask`,
            `Fixed`, a `Compose` of those), an instance, name or config.
        mask: 0/1 numbers or booleans marking the constrained entries, of the
            weight's shape or broadcastable to it (see the module docstring).

    Example:

    >>> import keras, kconstraints
    >>> # a kernel whose first two rows are fed by z (constrained), the last by x (free)
    >>> c = kconstraints.Partial(kconstraints.NonNeg(), mask=[[1], [1], [0]])
    >>> w = keras.ops.convert_to_tensor([[-0.5, 0.7], [0.2, -0.3], [-0.4, -0.1]])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.0, 0.7], [0.2, 0.0], [-0.4, -0.1]]
    """

    def __init__(self, constraint, mask):
        constraint = check_constraint(self._owner, "constraint", constraint)
        self.constraint = check_elementwise(self._owner, "constraint", constraint)
        self._set_mask(mask)

    def project(self, w):
        return ops.where(self._where(w), self.constraint(w), w)
