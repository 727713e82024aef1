"""Polyhedra: each slice along `axis` projected onto `{x : A x = b, G x <= h}`.

A slice is read as one flat vector, as in `affine.py`: for a Dense kernel
`(input_dim, units)`, `axis=0` makes the incoming weights of each unit a
slice; for a Conv2D kernel `(rows, cols, in_channels, filters)`,
`axis=[0, 1, 2]` makes each filter one, flattened in row-major order. All
the matrices the projection needs are fixed when the constraint is made:
they are computed there, once, in float64 NumPy. The set is checked to be
non-empty there too, exactly: Lawson and Hanson's least-distance program
(1974, "Solving Least Squares Problems", ch. 23) projects a point onto the
polyhedron through one non-negative least-squares problem, or returns a
Farkas certificate that no point exists, which the error reports.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kconstraints._backend import fori_loop, solve
from kconstraints._base import Constraint
from kconstraints._checks import (
    check_at_least_one,
    check_axis,
    check_columns,
    check_consistent_equalities,
    check_constant_rows,
    check_farkas,
    check_int,
    check_linear_system,
    resolve_axis,
)
from kconstraints._constants import MACHINE_EPSILON
from kconstraints._registry import fan_in, polyhedron_rows, register
from kconstraints._tensors import Constant, safe_divisor, slices_as_rows, upcast

__all__ = ["Polyhedron"]

#: The interior-point method stops improving a slice once its (scaled)
#: complementarity `mean(lam * s)` is below this many eps squared.
_MU_FLOOR = 16.0
#: The pull toward the interior point is taken only when it moves the output
#: by at most this many eps of its largest entry: rounding.
_PULL_LIMIT = 8.0
#: A polished multiplier or slack may be this many eps below 0 (the data are of
#: size 1; a wrong active set moves the output by about that much, times |w|).
_POLISH_SLACK = 16.0
#: A slice whose rows are violated by at most this many eps (of its largest
#: |G' w - h'|) is in the set: the rounding of `G' w - h'`.
_INSIDE_SLACK = 64.0
#: The proximal weight and steps of the polish (the dual data are of size 1).
_PROXIMAL = 2.0**-10
_REFINEMENTS = 2
#: The step to the boundary taken by each interior-point iteration.
_STEP = 0.99


def _nnls(e, f, tol):
    """`argmin_{u >= 0} ||e u - f||`: Lawson and Hanson's active-set algorithm (1974, ch. 23)."""
    k = e.shape[1]
    u, passive = np.zeros(k), np.zeros(k, bool)
    for _ in range(3 * k + 3):
        gradient = e.T @ (f - e @ u)
        if passive.all() or np.max(np.where(passive, -np.inf, gradient)) <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, gradient))] = True
        while True:
            z = np.zeros(k)
            z[passive] = np.linalg.lstsq(e[:, passive], f, rcond=None)[0]
            if np.all(z[passive] > tol):
                u = z
                break
            bad = passive & (z <= tol)
            alpha = np.min(u[bad] / (u[bad] - z[bad]))
            u = u + alpha * (z - u)
            passive &= u > tol
            u[~passive] = 0.0
    return u


def _least_distance(g, h):
    """The point of `{y : g y <= h}` nearest 0, or `(None, u)`: `u >= 0`, `u g = 0`, `u h < 0`.

    Lawson and Hanson's LDP: with `E = [-g^T; -h^T]` and `f = e_last`, the
    non-negative least-squares solution `u` leaves the residual `r = E u - f`,
    and the point is `-r[:-1] / r[-1]`; a residual of 0 (`r[-1]` = 0) is
    the certificate `u` (Farkas) that the set is empty.
    """
    e = np.vstack([-g.T, -h[None]])
    f = np.zeros(len(e))
    f[-1] = 1.0
    u = _nnls(e, f, 1e-13 * len(e))
    r = e @ u - f
    if r[-1] > -1e-10:
        return None, u
    return -r[:-1] / r[-1], u


@register(
    family="slice",
    convex=True,
    exact=(
        "Not exact: a fixed number of interior-point iterations, then an exact solve on the "
        "active set they find; to rounding when that set is the optimal one (every test "
        "case here with the default 20), else to the iterations' tolerance; A x = b to rounding"
    ),
    summary=(
        "A · slice = b and G · slice <= h; a fixed number of interior-point iterations on "
        "the dual, an exact solve on the active set, a pull to an interior point"
    ),
    examples=lambda shape: Polyhedron(*polyhedron_rows(shape), axis=fan_in(shape)),
    uses="linear equalities and inequalities on each unit's or filter's weights",
)
class Polyhedron(Constraint):
    """Polyhedron: the projection onto `{x : A x = b, G x <= h}` for every slice.

    Each slice is put on `{A x = b}` exactly (`x0 + (w - x0) N N^T`, one SVD
    of `A`); the inequalities are then solved there through the dual,
    `min_{lam >= 0} 1/2 lam^T M lam - lam^T (G' w - h')`, `M = G' G'^T` (the
    rows restricted to the subspace, normalized), by `iterations` Mehrotra
    predictor-corrector steps (Wright 1997, "Primal-Dual Interior-Point
    Methods", ch. 11), one q x q solve each (q: rows of `G`); the active set
    they find is solved exactly (OSQP's polishing, Stellato et al. 2020) and
    refined once. Last, a step toward a strictly feasible point found here
    makes `G x <= h` hold as computed where that moves `x` by at most 8 eps
    of its largest entry; elsewhere it holds to the rounding of `G x`, about
    eps * |w|. `residual(w)` (what `kconstraints.violations` reports) is the
    largest violation of a row.

    Args:
        A, b: `p` equalities, `A` of shape `(p, n)` (n: a slice's size), `b`
            a number or `p` numbers (None: 0); `A=None` for none.
        G, h: `q` inequalities, `G` of shape `(q, n)`, `h` as `b`.
        axis: the axes that form a slice: `0` for each unit of a Dense
            kernel `(input_dim, units)`, `[0, 1, 2]` for each filter of a
            Conv2D kernel `(rows, cols, in, filters)`; `None` is the whole tensor.
        iterations: the interior-point iterations (>= 1).

    Example:

    >>> import keras, kconstraints
    >>> c = kconstraints.Polyhedron(A=[[1.0, 1.0]], b=[1.0], G=[[-1.0, 0.0]], h=[0.0])
    >>> keras.ops.convert_to_numpy(c(keras.ops.convert_to_tensor([[-1.0], [3.0]]))).round(4).tolist()
    [[0.0], [1.0]]
    """

    def __init__(self, A=None, b=None, G=None, h=None, axis=0, iterations=20):
        self.A, self.b = check_linear_system(self._owner, "A", A, "b", b)
        self.G, self.h = check_linear_system(self._owner, "G", G, "h", h, columns=self.A)
        check_at_least_one(self._owner, A=self.A, G=self.G)
        self.axis = check_axis(self._owner, "axis", axis)
        self.iterations = check_int(self._owner, "iterations", iterations)
        self._n = (self.A if self.A is not None else self.G).shape[1]
        self._factor()

    def _factor(self):
        """The float64 constants of the projection (see the class docstring)."""
        n = self._n
        if self.A is None:
            x0, null, rows = np.zeros(n), np.eye(n), np.zeros((0, n))
        else:
            p = len(self.A)
            u, s, vt = np.linalg.svd(self.A, full_matrices=True)
            rank = int(np.sum(s > s[0] * max(p, n) * MACHINE_EPSILON["float64"]))
            x0 = vt[:rank].T @ ((u[:, :rank].T @ self.b) / s[:rank])
            check_consistent_equalities(self._owner, self.A, self.b, x0, rank)
            null, rows = vt[rank:].T, vt[:rank]
        self._x0 = Constant(x0)
        # The smaller basis: remove the row space, or keep the null space.
        self._remove = self.A is not None and len(rows) <= null.shape[1]
        basis = rows if self._remove else null.T
        self._basis = Constant(np.ascontiguousarray(basis.T)) if len(basis) else None
        self._basis_t = Constant(basis) if len(basis) else None
        self._inequalities = False
        if self.G is None:
            return
        # The rows on y, x = x0 + null y: G null y <= h - G x0, each of norm 1.
        g, h = self.G @ null, self.h - self.G @ x0
        norms = np.linalg.norm(g, axis=1)
        constant = norms <= 1e-12 * np.linalg.norm(self.G, axis=1)
        check_constant_rows(self._owner, self.G, self.h, x0, constant)
        kept = np.flatnonzero(~constant)
        if not kept.size:  # every row holds on all of {A x = b}
            return
        g, h = g[kept] / norms[kept, None], h[kept] / norms[kept]
        point, certificate = _least_distance(g, h)
        if point is None:
            weights = np.zeros(len(self.G))
            weights[kept] = certificate / norms[kept]
            check_farkas(self._owner, self.G, self.h, x0, weights)
        self._inequalities = True
        self._rows = Constant(g @ null.T)  # each row on the subspace, as a flat slice
        self._rows_t = Constant(np.ascontiguousarray(null @ g.T))
        self._h = Constant(h)
        self._m = Constant(g @ g.T)
        self._eye = Constant(np.eye(len(g)))
        self._interior = None
        scale = max(1.0, float(np.abs(h).max()))
        for cap in (scale, 1e3 * scale, 1e6 * scale):
            # The point of {g y + t <= h, t <= cap} nearest (0, cap): a positive t is a margin.
            lifted = np.vstack([np.hstack([g, np.ones((len(g), 1))]), np.eye(len(g[0]) + 1)[-1]])
            target = np.zeros(len(g[0]) + 1)
            target[-1] = cap
            shifted, _ = _least_distance(lifted, np.append(h, cap) - lifted @ target)
            if shifted is not None and shifted[-1] + cap > 0:
                y = shifted[:-1]
                self._interior = Constant(x0 + null @ y)
                self._gz = Constant(g @ y)
                break

    # ---------------------------------------------------------------- the call

    def _slices(self, w):
        x = upcast(w)
        axes = resolve_axis(self._owner, "axis", self.axis, x.shape)
        rows, restore = slices_as_rows(x, axes)
        for name, matrix in (("A", self.A), ("G", self.G)):
            if matrix is not None:
                check_columns(self._owner, name, matrix.shape, axes, tuple(x.shape))
        return rows, restore

    def _affine(self, rows):
        """Each row projected onto `{A x = b}`."""
        if self.A is None:
            return rows
        x0 = self._x0.as_dtype_of(rows)
        if self._basis is None:  # a single point
            return ops.zeros_like(rows) + x0
        part = ((rows - x0) @ self._basis.as_dtype_of(rows)) @ self._basis_t.as_dtype_of(rows)
        return rows - part if self._remove else x0 + part

    def project(self, w):
        rows, restore = self._slices(w)
        x = self._affine(rows)
        if not self._inequalities:
            return restore(x)
        g_t, h = self._rows_t.as_dtype_of(x), self._h.as_dtype_of(x)
        c = x @ g_t - h
        # Scaled by the largest |c| of its slice, every dual problem has data of size 1.
        scale = safe_divisor(ops.amax(ops.abs(c), axis=-1, keepdims=True))
        lam, k, polished = self._dual(c / scale)
        g = self._rows.as_dtype_of(x)
        x = x - (scale * lam) @ g
        # One step of iterative refinement on the polished slices' active rows:
        # their residual, now at the size of x, not of w, solved again.
        x = x - _solved(k, (x @ g_t - h) * polished) @ g
        return restore(self._pull(x, g_t, h))

    def _dual(self, c):
        """`argmin_{lam >= 0} 1/2 lam^T M lam - c^T lam` per row of `c`.

        Returns it, the polish's matrix, and per row the active rows where
        the polish held (none where it did not).
        """
        m, eye = self._m.as_dtype_of(c), self._eye.as_dtype_of(c)
        eps = _eps(c)
        floor = _MU_FLOOR * eps * eps

        def to_boundary(v, dv):
            ratio = ops.where(dv < 0, -v / ops.where(dv < 0, dv, -1.0), ops.ones_like(v))
            return ops.amin(ratio, axis=-1, keepdims=True)

        def merit(lam, s):
            """Complementarity plus dual residual: 0 at the solution."""
            r = ops.amax(ops.abs(lam @ m - c - s), axis=-1, keepdims=True)
            return ops.mean(lam * s, axis=-1, keepdims=True) + r

        def body(_, state):
            lam, s, best_lam, best_s, best = state
            r = lam @ m - c - s
            mu = ops.mean(lam * s, axis=-1, keepdims=True)
            # + eps: regularized (Friedlander and Orban 2012), the system is never
            # singular where M is (torch's solve raises on a singular one).
            k = m + ops.expand_dims(s / lam + eps, -1) * eye
            # The predictor (affine scaling), then Mehrotra's centred corrector.
            d_lam = _solved(k, -s - r)
            d_s = d_lam @ m + r
            alpha = ops.minimum(1.0, ops.minimum(to_boundary(lam, d_lam), to_boundary(s, d_s)))
            mu_aff = ops.mean((lam + alpha * d_lam) * (s + alpha * d_s), axis=-1, keepdims=True)
            sigma = (mu_aff / mu) ** 3
            d_lam = _solved(k, (sigma * mu - d_lam * d_s) / lam - s - r)
            d_s = d_lam @ m + r
            alpha = _STEP * ops.minimum(to_boundary(lam, d_lam), to_boundary(s, d_s))
            alpha = ops.minimum(1.0, alpha)
            new_lam, new_s = lam + alpha * d_lam, s + alpha * d_s
            # A slice stops at convergence, or at a step rounding has broken
            # (its float32 systems are then too ill-conditioned to solve), and
            # the best iterate is kept: float32 steps past it may get worse.
            keep = ops.logical_or(mu <= floor, ops.logical_not(_finite(new_lam, new_s)))
            new_lam, new_s = ops.where(keep, lam, new_lam), ops.where(keep, s, new_s)
            score = merit(new_lam, new_s)
            better = score < best
            return (
                new_lam,
                new_s,
                ops.where(better, new_lam, best_lam),
                ops.where(better, new_s, best_s),
                ops.where(better, score, best),
            )

        start = ops.ones_like(c)
        state = (start, start, start, start, merit(start, start))
        _, _, lam, s, _ = fori_loop(0, self.iterations, body, state)
        # Polish: the active set the iterations found, solved as equalities from
        # their multipliers by proximal steps (regularized, so a degenerate
        # vertex's dependent rows keep multipliers near the iterate's, >= 0);
        # where that fails, once more on the set it points to (a step of the
        # primal-dual active-set method, Hintermüller, Ito and Kunisch 2002).
        tolerance = _POLISH_SLACK * eps

        def polish(active, start):
            both = ops.expand_dims(active, -1) * ops.expand_dims(active, -2)
            k = m * both + ops.expand_dims(1.0 - active + _PROXIMAL * active, -1) * eye
            polished = start * active
            for _ in range(_REFINEMENTS):
                polished = polished + _solved(k, (c - polished @ m) * active)
            slack = polished @ m - c
            good = ops.logical_and(
                ops.all(polished >= -tolerance, axis=-1, keepdims=True),
                ops.all(slack >= -tolerance, axis=-1, keepdims=True),
            )
            return polished, slack, k, ops.logical_and(good, _finite(polished, slack))

        active = ops.cast(lam > s, c.dtype)
        polished, slack, k, good = polish(active, lam)
        again = ops.cast(ops.logical_or(polished > 0, slack < 0), c.dtype)
        polished_2, _, k_2, good_2 = polish(again, ops.where(polished > 0, polished, lam))
        second = ops.logical_and(ops.logical_not(good), good_2)
        polished = ops.where(second, polished_2, polished)
        k = ops.where(ops.expand_dims(second, -1), k_2, k)
        active = ops.where(second, again, active)
        good = ops.logical_or(good, good_2)
        # A slice already in the set (to rounding) has multipliers 0: kept, even
        # at a degenerate vertex, where the iterations converge slowest.
        inside = ops.all(c <= _INSIDE_SLACK * eps, axis=-1, keepdims=True)
        polished = ops.where(inside, ops.zeros_like(polished), polished)
        active = ops.where(inside, ops.zeros_like(active), active)
        good = ops.logical_or(good, inside)
        chosen = ops.where(good, polished, lam)
        chosen = ops.where(chosen > 0, chosen, ops.zeros_like(chosen))
        return chosen, k, ops.cast(good, c.dtype) * active

    def _pull(self, x, g_t, h):
        """`x + share (z - x)` with the least `share` making `G x <= h`, when that is rounding."""
        if self._interior is None:
            return x
        z = self._interior.as_dtype_of(x)
        gz = self._gz.as_dtype_of(x)
        gx = x @ g_t
        over = gx - h
        # Row i binds at share_i = over_i / (gx_i - gz_i), where gx_i > h_i > gz_i.
        share = ops.where(over > 0, over / ops.where(over > 0, gx - gz, 1.0), 0.0)
        share = ops.amax(share, axis=-1, keepdims=True)
        move = share * ops.amax(ops.abs(z - x), axis=-1, keepdims=True)
        limit = _PULL_LIMIT * _eps(x) * ops.amax(ops.abs(x), axis=-1, keepdims=True)
        return ops.where(move <= limit, x + share * (z - x), x)

    def residual(self, w):
        """The largest violation of the rows by any slice: `max(|A w - b|, G w - h, 0)`.

        In the units of `A`, `b`, `G` and `h` as given; 0 for a weight in the set.
        """
        rows, _ = self._slices(w)
        worst = ops.zeros((), rows.dtype)
        if self.A is not None:
            a = Constant(self.A.T).as_dtype_of(rows)
            gap = ops.abs(rows @ a - Constant(self.b).as_dtype_of(rows))
            worst = ops.maximum(worst, ops.amax(gap))
        if self.G is not None:
            g = Constant(self.G.T).as_dtype_of(rows)
            worst = ops.maximum(worst, ops.amax(rows @ g - Constant(self.h).as_dtype_of(rows)))
        return worst


def _eps(x):
    """Machine epsilon of `x`'s dtype (float32 or float64, the compute dtypes)."""
    return MACHINE_EPSILON[keras.backend.standardize_dtype(x.dtype)]


def _solved(k, rhs):
    """`k^-1 rhs` for a batch of matrices `k` and of vectors `rhs`."""
    return ops.squeeze(solve(k, ops.expand_dims(rhs, -1)), -1)


def _finite(*tensors):
    """Per row: every entry of every tensor finite."""
    out = None
    for t in tensors:
        ok = ops.all(ops.isfinite(t), axis=-1, keepdims=True)
        out = ok if out is None else ops.logical_and(out, ok)
    return out
