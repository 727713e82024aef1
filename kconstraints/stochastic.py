"""Doubly stochastic matrices: non-negative, every row and every column summing to 1."""

from __future__ import annotations

from keras import ops

from kconstraints._backend import fori_loop
from kconstraints._base import Constraint
from kconstraints._checks import check_int, check_square
from kconstraints._kernels import simplex_threshold
from kconstraints._linalg import transpose
from kconstraints._registry import register, square
from kconstraints._tensors import safe_divisor, upcast

__all__ = ["DoublyStochastic"]


@register(
    family="matrix",
    convex=True,
    exact="near the projection: dual block ascent, then a rounding step",
    summary=(
        "square matrices with entries >= 0 and every row and column summing to 1 exactly "
        "(to rounding); near the projection: dual block ascent, then a rounding step"
    ),
    examples=square(lambda shape: DoublyStochastic()),
    shape=(3, 4, 4),
    uses="doubly stochastic matrices (soft permutations, transport plans)",
)
class DoublyStochastic(Constraint):
    """Doubly stochastic matrices: the Birkhoff polytope, every marginal exact.

    The set is `{X : X >= 0, X 1 = 1, X^T 1 = 1}` for the square matrices in
    the last two axes (batched over any leading axes), e.g. a residual mixing
    matrix. The projection `min ||X - W||_F` is `X = max(W - u 1^T - 1 v^T, 0)`
    for the dual vectors `u`, `v`. `iterations` sweeps of exact block ascent
    on the dual find them: `u` makes every row of `X` sum to 1 given `v`,
    then `v` every column given `u`, each exactly by one simplex threshold
    per row or column (Held, Wolfe & Crowder 1974), which Sinkhorn's scaling
    would only approach. A last rounding step (Altschuler, Weed & Rigollet
    2017, "Near-linear time approximation algorithms for optimal transport
    via Sinkhorn iteration", Alg. 2) scales down the rows, then the columns,
    that sum to more than 1 and adds the non-negative rank-one
    `e_r e_c^T / sum(e_r)` of the remaining deficits: the result is in the
    polytope up to float rounding whatever the number of sweeps, and moves
    by at most twice the marginal error of the last sweep. It is the exact
    projection in the limit; how close a fixed count gets is measured in
    the affine-sets guide (docs/guides/affine-sets.md).

    Args:
        iterations: sweeps of the dual ascent (>= 1): each sorts every row
            and every column once.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.0], [1.0, 1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.DoublyStochastic()(w)).round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self, iterations=50):
        self.iterations = check_int(self._owner, "iterations", iterations)

    def project(self, w):
        shape = tuple(w.shape)
        check_square(self._owner, shape)
        x = ops.reshape(upcast(w), shape)  # a tensor, never a tf.Variable (see _backend.py)

        # The last sweep is written out: it needs `u` as well as `v`.
        state = (x, ops.zeros_like(x[..., :1, :]))
        v = fori_loop(0, self.iterations - 1, _sweep, state)[1]
        u = simplex_threshold(x - v, 1.0)
        v = transpose(simplex_threshold(transpose(x - u), 1.0))
        shifted = x - u - v
        return _round_to_polytope(ops.where(shifted > 0, shifted, ops.zeros_like(shifted)))


def _sweep(_, state):
    """One sweep of the dual ascent: `u` for the rows given `v`, then `v` for the columns.

    A module-level function, so that JAX's eager `fori_loop` reuses its
    compiled loop from call to call.
    """
    x, v = state
    u = simplex_threshold(x - v, 1.0)
    return x, transpose(simplex_threshold(transpose(x - u), 1.0))


def _round_to_polytope(p):
    """Non-negative `p` with marginals near 1 made exactly doubly stochastic (Altschuler et al.).

    Rows, then columns, summing to more than 1 are scaled down to 1; every
    row and column is then short by `e_r`, `e_c >= 0`, with
    `sum(e_r) = sum(e_c)`, and adding `e_r e_c^T / sum(e_r)` fills both.
    """
    rows = ops.sum(p, axis=-1, keepdims=True)
    p = ops.where(rows > 1, p / safe_divisor(rows), p)
    columns = ops.sum(p, axis=-2, keepdims=True)
    p = ops.where(columns > 1, p / safe_divisor(columns), p)
    short_rows = 1 - ops.sum(p, axis=-1, keepdims=True)
    short_columns = 1 - ops.sum(p, axis=-2, keepdims=True)
    short_rows = ops.where(short_rows > 0, short_rows, ops.zeros_like(short_rows))
    short_columns = ops.where(short_columns > 0, short_columns, ops.zeros_like(short_columns))
    total = ops.sum(short_rows, axis=-2, keepdims=True)
    return p + short_rows * short_columns / safe_divisor(total)
