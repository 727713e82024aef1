"""Affine sets: each slice along `axis` held on a hyperplane, such as a fixed mean."""

from __future__ import annotations

from kconstraints._base import Constraint, register
from kconstraints._checks import check_axis, check_number, resolve_axis
from kconstraints._tensors import mean, upcast


@register
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

    Returns:
        A tensor of the weight's shape and dtype.

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
