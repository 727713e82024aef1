"""A soft constraint: a regularizer that charges the squared distance to a constraint's set."""

from __future__ import annotations

import keras
from keras import ops

from kconstraints._base import Configurable
from kconstraints._checks import check_constraint, check_number
from kconstraints._registry import register
from kconstraints._tensors import upcast

__all__ = ["Penalty"]


@register(
    family="soft",
    convex=False,
    exact="a regularizer, not a projection: the squared distance to the set, in the loss",
    summary="not a projection: a regularizer, strength · dist(w, C)², for `kernel_regularizer=`",
    examples={},
    uses="a soft constraint, as `kernel_regularizer=` ([guide](guides/projection-penalty-clipping.md))",
)
class Penalty(Configurable, keras.regularizers.Regularizer):
    """Soft constraint: `strength * dist(w, C)^2 = strength * sum((w - P(w))^2)`.

    A hard constraint projects after each step, so the gradient never sees
    it; a penalty adds the squared distance to the set `C` of `constraint` to
    the loss instead, so the gradient pulls the weight towards `C` and the
    weight may leave it when the data pays for that. The gradient is
    `2 * strength * (w - P(w))`: for a closed convex set this is the exact
    gradient of the squared distance (the distance is differentiable, with
    this gradient, everywhere), so `P(w)` is held constant under
    `stop_gradient` and no backend differentiates through the projection.
    For a non-convex set it is the gradient wherever `P(w)` is unique.

    Args:
        constraint: the constraint whose set is charged: an instance, a name
            (`"non_neg"`) or a config.
        strength: the weight of the penalty in the loss (>= 0).

    Returns:
        A scalar: float32 for float16/bfloat16 weights, else the weight's dtype.

    Example:

    >>> import keras, kconstraints as kc
    >>> layer = keras.layers.Dense(4, kernel_regularizer=kc.Penalty(kc.NonNeg(), strength=0.1))
    >>> w = keras.ops.convert_to_tensor([[-1.0, 2.0], [-2.0, 0.5]])
    >>> round(float(kc.Penalty(kc.NonNeg(), strength=0.1)(w)), 3)  # 0.1 * (1 + 4)
    0.5
    """

    def __init__(self, constraint, strength=1.0):
        self.constraint = check_constraint(self._owner, "constraint", constraint)
        self.strength = check_number(self._owner, "strength", strength, low=0)

    def __call__(self, x):
        x = upcast(ops.convert_to_tensor(x))
        gap = x - ops.stop_gradient(self.constraint(x))
        return self.strength * ops.sum(gap * gap)
