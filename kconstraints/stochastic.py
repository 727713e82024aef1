"""Transport polytopes: non-negative matrices with given row and column sums.

`Transport` takes any positive marginals; `DoublyStochastic` is its square
case with every row and column summing to 1. Both run one map: dual block
ascent on `max(W - u 1^T - 1 v^T, 0)`, then a rounding step into the set.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from kconstraints._backend import fori_loop
from kconstraints._base import Constraint
from kconstraints._checks import (
    check_equal_totals,
    check_int,
    check_matrix_shape,
    check_positive_vector,
    check_square,
)
from kconstraints._kernels import simplex_threshold
from kconstraints._linalg import transpose
from kconstraints._registry import register, square
from kconstraints._tensors import Constant, safe_divisor, upcast

__all__ = ["DoublyStochastic", "Transport"]

_NEAR = "near the projection: dual block ascent, then a rounding step"


@register(
    family="matrix",
    convex=True,
    exact=_NEAR,
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
    the affine-sets guide (docs/guides/affine-sets.md). `Transport` is the
    same map for other marginals.

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
        rows = ops.ones((shape[-2], 1), dtype=x.dtype)
        return _transport_plan(x, rows, ops.ones((1, shape[-1]), dtype=x.dtype), self.iterations)


@register(
    family="matrix",
    convex=True,
    exact=_NEAR,
    summary=(
        "matrices with entries >= 0, row sums `row_sums` and column sums `col_sums` exactly "
        "(to rounding); near the projection: dual block ascent, then a rounding step"
    ),
    # Each input's outgoing weights sum to 1 and each unit's incoming ones to
    # input_dim / units, the uniform marginals of any kernel shape.
    examples=lambda shape: Transport(np.ones(shape[-2]), np.full(shape[-1], shape[-2] / shape[-1])),
    shape=(3, 4, 6),
    uses="transport plans with given marginals (couplings of two histograms, routing matrices)",
)
class Transport(Constraint):
    """Transport polytope: non-negative matrices with row sums `r` and column sums `c`.

    The set is `{X : X >= 0, X 1 = r, X^T 1 = c}` for the `(len(r), len(c))`
    matrices in the last two axes (batched over any leading axes): for a
    Dense kernel `(input_dim, units)`, input `i` sends out `r_i` in all and
    unit `j` receives `c_j`; for a Conv2D kernel `(rows, cols, in_channels,
    filters)`, each tap's `(in_channels, filters)` matrix. As in
    `DoublyStochastic` (this map with `r = c = 1`), `X = max(W - u 1^T -
    1 v^T, 0)`: `iterations` sweeps of exact dual block ascent find `u` (row
    `i` sums to `r_i`: one simplex threshold of total `r_i`) and `v` (column
    `j` to `c_j`), then Altschuler, Weed & Rigollet's (2017, Alg. 2) rounding
    scales down the rows above `r`, then the columns above `c`, and adds the
    rank-one `e_r e_c^T / sum(e_r)` of the deficits: the marginals are exact
    to rounding whatever the sweeps. The exact projection in the limit; how
    close a fixed count gets: docs/guides/affine-sets.md.

    Args:
        row_sums: the row totals `r`, a 1-D array of finite numbers > 0 (a
            scalar is refused: its length fixes the matrices' row count).
        col_sums: the column totals `c`, likewise; `sum(c)` must equal
            `sum(r)` within a relative 1e-6, and `c` is scaled to `sum(r)`.
        iterations: sweeps of the dual ascent (>= 1).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    >>> c = kconstraints.Transport([2.0, 1.0], [1.0, 1.0, 1.0])
    >>> keras.ops.convert_to_numpy(c(w)).round(3).tolist()
    [[1.0, 0.25, 0.75], [0.0, 0.75, 0.25]]
    """

    def __init__(self, row_sums, col_sums, iterations=50):
        owner = self._owner
        self.row_sums = check_positive_vector(owner, "row_sums", row_sums)
        self.col_sums = check_positive_vector(owner, "col_sums", col_sums)
        check_equal_totals(owner, "row_sums", self.row_sums, "col_sums", self.col_sums)
        self.iterations = check_int(owner, "iterations", iterations)
        # The rounding step fills both marginals only for equal totals.
        scale = np.sum(self.row_sums) / np.sum(self.col_sums)
        self._rows = Constant(self.row_sums[:, None])
        self._columns = Constant(self.col_sums[None, :] * scale)

    def project(self, w):
        shape = tuple(w.shape)
        m, n = self._rows.shape[0], self._columns.shape[1]
        check_matrix_shape(self._owner, shape, m, n, "len(row_sums), len(col_sums)")
        x = ops.reshape(upcast(w), shape)  # a tensor, never a tf.Variable (see _backend.py)
        rows, columns = self._rows.as_dtype_of(x), self._columns.as_dtype_of(x)
        return _transport_plan(x, rows, columns, self.iterations)


def _transport_plan(x, rows, columns, iterations):
    """The map of both classes: `iterations` sweeps, then the rounding step.

    `rows` is the row totals as an `(m, 1)` tensor, `columns` the column
    totals as a `(1, n)` one; the column thresholds run on `x^T`, whose rows
    the `(n, 1)` totals match.
    """
    totals = transpose(columns)
    # The last sweep is written out: it needs `u` as well as `v`.
    state = (x, rows, totals, ops.zeros_like(x[..., :1, :]))
    v = fori_loop(0, iterations - 1, _sweep, state)[3]
    u = simplex_threshold(x - v, rows)
    v = transpose(simplex_threshold(transpose(x - u), totals))
    shifted = x - u - v
    p = ops.where(shifted > 0, shifted, ops.zeros_like(shifted))
    return _round_to_polytope(p, rows, columns)


def _sweep(_, state):
    """One sweep of the dual ascent: `u` for the rows given `v`, then `v` for the columns.

    A module-level function, so that JAX's eager `fori_loop` reuses its
    compiled loop from call to call; the totals travel in the state for that.
    """
    x, rows, totals, v = state
    u = simplex_threshold(x - v, rows)
    return x, rows, totals, transpose(simplex_threshold(transpose(x - u), totals))


def _round_to_polytope(p, rows, columns):
    """Non-negative `p` with marginals near `rows`, `columns` made exact (Altschuler et al.).

    Rows, then columns, summing to more than their totals are scaled down
    to them; every row and column is then short by `e_r`, `e_c >= 0`, with
    `sum(e_r) = sum(e_c)` (the totals agree), and adding
    `e_r e_c^T / sum(e_r)` fills both.
    """
    sums = ops.sum(p, axis=-1, keepdims=True)
    p = ops.where(sums > rows, p / safe_divisor(sums) * rows, p)
    sums = ops.sum(p, axis=-2, keepdims=True)
    p = ops.where(sums > columns, p / safe_divisor(sums) * columns, p)
    short_rows = rows - ops.sum(p, axis=-1, keepdims=True)
    short_columns = columns - ops.sum(p, axis=-2, keepdims=True)
    short_rows = ops.where(short_rows > 0, short_rows, ops.zeros_like(short_rows))
    short_columns = ops.where(short_columns > 0, short_columns, ops.zeros_like(short_columns))
    total = ops.sum(short_rows, axis=-2, keepdims=True)
    return p + short_rows * short_columns / safe_divisor(total)
