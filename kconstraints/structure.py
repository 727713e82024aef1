"""Structure constraints: which entries are free, held at a value, or constrained.

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

import inspect

import numpy as np
from keras import ops

from kconstraints._base import Constant, Constraint, check_array, register
from kconstraints.serialization import get


def check_mask(owner, name, mask):
    """0/1 numbers or booleans, returned as a NumPy array (booleans stay booleans)."""
    try:
        arr = np.asarray(mask)
    except ValueError:  # ragged: check_array names the problem
        arr = None
    if arr is None or arr.dtype != bool:
        arr = check_array(owner, name, mask)
        if not np.isin(arr, (0.0, 1.0)).all():
            bad = np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:3].tolist()
            raise ValueError(f"{owner}: `{name}` must hold only 0 and 1 (or booleans), got {bad}.")
    return arr


def check_fits(owner, name, arr_shape, x):
    """Raise unless an array of `arr_shape` broadcasts to `x`'s shape (NumPy rules).

    Shapes are plain tuples stored in `__init__`: reading NumPy attributes
    while torch.compile traces would break its graph.
    """
    shape = tuple(x.shape)
    pairs = zip(reversed(arr_shape), reversed(shape), strict=False)  # trailing axes
    if len(arr_shape) > len(shape) or any(a not in (1, s) for a, s in pairs):
        raise ValueError(
            f"{owner}: `{name}` of shape {arr_shape} does not fit the weight's shape {shape}."
        )


def describe(obj, **args):
    """`Name(arg=value, ...)` with nested constraints as their repr and arrays as their shape."""

    def show(value):
        if isinstance(value, np.ndarray) and value.ndim:
            return f"<array of shape {value.shape}>"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(show(v) for v in value) + "]"
        return repr(value)

    return f"{type(obj).__name__}({', '.join(f'{k}={show(v)}' for k, v in args.items())})"


class _Masked(Constraint):
    """Shared: a 0/1 `mask` checked in `__init__` and matched to the weight at call time."""

    elementwise = True

    def _set_mask(self, mask):
        self.mask = check_mask(type(self).__name__, "mask", mask)
        self._mask_shape = tuple(self.mask.shape)
        # A tensor made once (torch.compile can not trace Keras's conversion of
        # a NumPy array), of 0/1 in float16 rather than booleans: torch's CPU
        # kernels read a 1-byte mask one entry at a time and vectorize a
        # 2-byte one. Measured with torch 2.13 on 2 cores at 1e6 entries,
        # compiled: 2.2 ms with a random boolean mask, 0.09 ms with float16
        # (a copy: 0.07 ms); JAX and TensorFlow (XLA) read both alike.
        self._mask_tensor = ops.convert_to_tensor((self.mask != 0).astype("float16"))

    def _where(self, w):
        check_fits(type(self).__name__, "mask", self._mask_shape, w)
        return ops.not_equal(self._mask_tensor, 0)

    def __repr__(self):
        names = inspect.signature(type(self).__init__).parameters
        return describe(self, **{k: getattr(self, k) for k in names if k != "self"})


@register
class Mask(_Masked):
    """Fixed sparsity pattern: entries where `mask` is 0 are held at 0.

    The set is the subspace `{w : w[mask == 0] = 0}` and the projection is
    `P(w) = w * mask`: a fixed connectivity (pruned, block-diagonal, local)
    that training can not grow back.

    Args:
        mask: 0/1 numbers or booleans, of the weight's shape or broadcastable
            to it (see the module docstring).

    Returns:
        A tensor of the weight's shape and dtype.

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


@register
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

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> c = kconstraints.Fixed([[1, 0], [0, 1]], values=1.0)  # an identity diagonal
    >>> w = keras.ops.convert_to_tensor([[0.5, 0.7], [-0.2, 0.3]])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[1.0, 0.7], [-0.2, 1.0]]
    """

    def __init__(self, mask, values=0.0):
        name = type(self).__name__
        self._set_mask(mask)
        self._values = check_array(name, "values", values)
        try:
            np.broadcast_shapes(self.mask.shape, self._values.shape)
        except ValueError as err:
            raise ValueError(
                f"{name}: `mask` of shape {self.mask.shape} and `values` of shape "
                f"{self._values.shape} do not broadcast together."
            ) from err
        self.values = self._values if self._values.ndim else float(self._values)
        self._constant = Constant(self._values)

    def project(self, w):
        check_fits(type(self).__name__, "values", self._constant.shape, w)
        return ops.where(self._where(w), self._constant.like(w), w)


@register
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

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> # a kernel whose first two rows are fed by z (constrained), the last by x (free)
    >>> c = kconstraints.Partial(kconstraints.NonNeg(), mask=[[1], [1], [0]])
    >>> w = keras.ops.convert_to_tensor([[-0.5, 0.7], [0.2, -0.3], [-0.4, -0.1]])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.0, 0.7], [0.2, 0.0], [-0.4, -0.1]]
    """

    def __init__(self, constraint, mask):
        name = type(self).__name__
        self.constraint = get(constraint)
        if not getattr(self.constraint, "elementwise", False):
            raise ValueError(
                f"{name}: `constraint` must be elementwise (act on each entry alone), got "
                f"{self.constraint!r}, which acts on whole slices or does not say it is "
                "elementwise; apply it to the whole weight or use kconstraints' twin."
            )
        self._set_mask(mask)

    def project(self, w):
        return ops.where(self._where(w), self.constraint(w), w)
