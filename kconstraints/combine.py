"""Several constraints on one weight: applied in order, or projected onto their intersection."""

from __future__ import annotations

from keras import ops

from kconstraints._backend import fori_loop
from kconstraints._base import Constraint
from kconstraints._checks import check_constraints, check_int
from kconstraints._registry import fan_in, register
from kconstraints._tensors import upcast
from kconstraints.affine import CenterAround
from kconstraints.bounds import Clip, NonNeg
from kconstraints.norm import MaxNorm

__all__ = ["Compose", "Intersection"]


class _ConstraintList(Constraint):
    """Shared: a list of constraints, elementwise exactly when every member is."""

    def _set_constraints(self, constraints):
        self.constraints = check_constraints(self._owner, "constraints", constraints)
        self.elementwise = all(getattr(c, "elementwise", False) for c in self.constraints)


@register(
    family="combination",
    convex=False,
    exact="the last constraint's result, not the projection onto the intersection",
    summary="c1, then c2, ...: each constraint in order",
    examples=lambda shape: Compose([NonNeg(), MaxNorm(2.0, axis=fan_in(shape))]),
    uses="several constraints on one weight",
)
class Compose(_ConstraintList):
    """Constraints applied one after the other: `P(w) = c_k(...c_2(c_1(w)))`.

    The result lies in the last constraint's set; it lies in all of them when
    each later constraint keeps the earlier ones, and it is then the exact
    projection onto the intersection in cases such as `[NonNeg(), MaxNorm(r)]`
    (a cone, then a ball centred at 0), `[Mask(m), MaxNorm(r)]` or
    `[Monotonic(), Clip(a, b)]` (bounded isotonic regression). Otherwise use
    `Intersection`.

    Args:
        constraints: the constraints, in the order they are applied:
            instances, names (`"non_neg"`) or configs. Each keeps its own
            `axis`.

    Example:

    >>> import keras, kconstraints as kc
    >>> c = kc.Compose([kc.NonNeg(), kc.MaxNorm(1.0, axis=0)])
    >>> w = keras.ops.convert_to_tensor([[3.0, -1.0], [-2.0, 0.5], [4.0, 0.0]])
    >>> keras.ops.convert_to_numpy(c(w)).astype(float).round(3).tolist()
    [[0.6, 0.0], [0.0, 0.5], [0.8, 0.0]]
    """

    def __init__(self, constraints):
        self._set_constraints(constraints)

    def project(self, w):
        x = upcast(w)
        for constraint in self.constraints:
            x = constraint(x)
        return x


@register(
    family="combination",
    convex=True,
    exact="a fixed number of Dykstra sweeps: exact only in the cases its reference lists",
    summary="C1 ∩ C2 ∩ ...: Dykstra's algorithm, a fixed number of sweeps (approximate)",
    # 50 sweeps of both projections.
    examples=lambda shape: Intersection([Clip(-0.5, 0.5), CenterAround(0.0, axis=0)], 50),
    uses="several constraints on one weight",
)
class Intersection(_ConstraintList):
    """The projection onto the intersection of convex sets, by Dykstra's algorithm.

    `P(w) = argmin_{z in C_1 ∩ ... ∩ C_k} ||z - w||`, approximated by
    `iterations` sweeps of Dykstra's alternating projections with correction
    terms (Dykstra 1983; Boyle & Dykstra 1986), which, unlike plain
    alternating projections, converge to the nearest point of the
    intersection and not just to some point of it. Each sweep projects once
    onto each set; the count is fixed, so the loop compiles under JAX jit,
    TF XLA and torch.compile, as one loop whatever the count
    (`_backend.fori_loop`).

    When it is exact: at every count when `w` already lies in the
    intersection; after one sweep when the composition of the projections is
    the projection onto the intersection, e.g. `[NonNeg(), MaxNorm(r)]` (a
    closed convex cone, then a ball or norm bound centred at 0); in finitely
    many sweeps when the sets are independent blocks of entries.

    How the error falls: for polyhedral sets (`NonNeg`, `Clip`,
    `CenterAround`, `Mask`, `Fixed`, `Partial`, `Simplex`, `L1Ball`,
    `Monotonic`) geometrically in the sweeps, slowly when the sets meet at a
    small angle (Deutsch & Hundal 1994); with a curved set (`MaxNorm`) it
    converges at no guaranteed rate; with a non-convex set (`UnitNorm`,
    `MinMaxNorm(min_value > 0)`, `Orthogonal`) nothing is guaranteed.

    Args:
        constraints: the constraints whose sets are intersected: instances,
            names or configs; each keeps its own `axis`. The intersection
            must not be empty.
        iterations: the number of sweeps (>= 1).

    Example:

    >>> import keras, kconstraints as kc
    >>> box_and_mean = kc.Intersection([kc.Clip(0.0, 1.0), kc.CenterAround(0.5, axis=0)], 200)
    >>> w = keras.ops.convert_to_tensor([[2.0], [0.2], [-0.7]])
    >>> keras.ops.convert_to_numpy(box_and_mean(w)).astype(float).round(3).tolist()
    [[1.0], [0.5], [0.0]]
    """

    def __init__(self, constraints, iterations=100):
        self._set_constraints(constraints)
        self.iterations = check_int(self._owner, "iterations", iterations)

    def _sweep(self, _, state):
        x, corrections = state[0], list(state[1:])
        for i, constraint in enumerate(self.constraints):
            shifted = x + corrections[i]
            x = constraint(shifted)
            corrections[i] = shifted - x
        return (x, *corrections)

    def project(self, w):
        x = upcast(w)
        state = (x, *[ops.zeros_like(x) for _ in self.constraints])
        return fori_loop(0, self.iterations, self._sweep, state)[0]
