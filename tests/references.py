"""Float64 NumPy references of every projection, written apart from the library.

Each `*_ref(...)` returns a function `w -> P(w)` on float64 arrays of any
shape; `per_slice` and `per_matrix` lift a function of one vector or one
matrix to a whole kernel. `violation` measures how far a variable is from
its constraint's set.
"""

from __future__ import annotations

import itertools

import numpy as np

from tests.helpers import to_np

# ------------------------------------------------------------ slices and norms


def per_slice(fn, w, axis):
    """Apply a 1-D NumPy function to each slice along `axis` (int, list or None)."""
    axes = range(w.ndim) if axis is None else np.atleast_1d(axis) % w.ndim
    rest = [a for a in range(w.ndim) if a not in axes]
    moved = np.transpose(w, rest + list(axes))
    rows = moved.reshape(-1, int(np.prod([w.shape[a] for a in axes])))
    out = np.stack([fn(r) for r in rows]).reshape(moved.shape)
    return np.transpose(out, np.argsort(rest + list(axes)))


def _norms(w, axis):
    return np.sqrt(np.sum(w**2, axis=axis, keepdims=True))


def max_norm_ref(max_value, axis):
    """Each slice scaled onto the ball ||w|| <= max_value if it lies outside."""

    def ref(w):
        n = _norms(w, axis)
        return w * np.where(n > max_value, max_value / np.maximum(n, 1e-300), 1.0)

    return ref


def min_max_ref(lo, hi, axis):
    """Each non-zero slice scaled to the nearest norm in [lo, hi]; a zero slice stays zero."""

    def ref(w):
        n = _norms(w, axis)
        return w * np.where(n > 0, np.clip(n, lo, hi) / np.maximum(n, 1e-300), 1.0)

    return ref


def unit_ref(axis):
    """Each slice divided by its norm."""
    return lambda w: w / np.maximum(_norms(w, axis), 1e-300)


def center_ref(ref_value, axis):
    """The mean over `axis` moved to `ref_value`."""
    return lambda w: w - w.mean(axis=axis, keepdims=True) + ref_value


# ------------------------------------------------------- simplex and L1 ball


def simplex_vector(v, total):
    """Duchi et al. (2008), Fig. 1: the support size rho, then theta, in float64.

    On `v - max(v)`, whose top entry is exactly 0: on `v` itself the test
    `u * j > css - total` found no index for entries of 1e16, and theta lost
    `total` to the rounding of the top entry (found by kconstraints.testing).
    """
    v = v - np.max(v)
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    j = np.arange(1, v.size + 1)
    rho = np.nonzero(u * j > css - total)[0][-1]
    return np.maximum(v - (css[rho] - total) / (rho + 1), 0)


def simplex_ref(total, axis):
    """Each slice onto {z >= 0, sum(z) = total}."""
    return lambda w: per_slice(lambda v: simplex_vector(v, total), w, axis)


def l1_ref(radius, axis):
    """Each slice onto {||z||_1 <= radius}: the simplex projection of |v|, signs put back."""

    def vector(v):
        if np.abs(v).sum() <= radius:
            return v
        return np.sign(v) * simplex_vector(np.abs(v), radius)

    return lambda w: per_slice(vector, w, axis)


def bounded_simplex_vector(v, total, low, high):
    """clip(v - tau, low, high) summing to total: the sum checked at every breakpoint, O(n^2)."""
    high = np.inf if high is None else high
    if low == high:
        return np.full_like(v, low)
    v = v - np.max(v)  # the map is shift-invariant; large entries keep their differences

    def mass(tau):
        return np.clip(v - tau, low, high).sum()

    points = np.unique(np.concatenate([v - low, v - high]))
    points = points[np.isfinite(points)]
    sums = np.array([mass(p) for p in points])  # non-increasing along increasing points
    if total >= sums[0]:
        # Above the smallest breakpoint's sum: every entry is free (only without a cap).
        tau = points[0] if np.isfinite(high) else (v.sum() - total) / v.size
        return np.clip(v - tau, low, high)
    if total <= sums[-1]:
        return np.clip(v - points[-1], low, high)
    j = np.nonzero(sums >= total)[0][-1]  # total lies between points j and j + 1
    a, b = points[j], points[j + 1]
    if sums[j] == sums[j + 1]:
        tau = a
    else:
        tau = a + (sums[j] - total) / (sums[j] - sums[j + 1]) * (b - a)  # linear on [a, b]
    return np.clip(v - tau, low, high)


def bounded_simplex_ref(total, axis, low=0.0, high=None):
    """Each slice onto {low <= z <= high, sum(z) = total}."""
    return lambda w: per_slice(lambda v: bounded_simplex_vector(v, total, low, high), w, axis)


def box_section_vector(v, a, total, low, high):
    """clip(v - tau * a, low, high) with <a, z> = total: the sum checked at every breakpoint, O(n^2).

    In the scores `v / a` less their largest, so that large entries keep
    their differences (as `bounded_simplex_vector` shifts `v`).
    """
    a = np.asarray(a, "float64").ravel()
    high = np.inf if high is None else high
    if low == high:
        return np.full_like(v, low)
    s = v / a
    s = s - np.max(s)

    def mass(tau):
        return a @ np.clip(a * (s - tau), low, high)

    points = np.unique(np.concatenate([s - low / a, s - high / a]))
    points = points[np.isfinite(points)]
    sums = np.array([mass(p) for p in points])  # non-increasing along increasing points
    if total >= sums[0]:
        # Above the smallest breakpoint's sum: only without a cap, every entry free.
        tau = points[0] if np.isfinite(high) else (a @ (a * s) - total) / (a @ a)
        return np.clip(a * (s - tau), low, high)
    if total <= sums[-1]:
        return np.clip(a * (s - points[-1]), low, high)
    j = np.nonzero(sums >= total)[0][-1]  # total lies between points j and j + 1
    p, q = points[j], points[j + 1]
    # Linear on [p, q]: its free entries, relative to the largest free score.
    mid = (p + q) / 2
    free = (s - high / a < mid) & (mid < s - low / a)
    if not free.any():  # flat: the sums differ by their rounding only
        return np.clip(a * (s - p), low, high)
    pivot = np.max(s[free])
    at_bounds = low * a[mid >= s - low / a].sum()
    if np.isfinite(high):
        at_bounds += high * a[mid <= s - high / a].sum()
    tau = pivot + (a[free] ** 2 @ (s[free] - pivot) + at_bounds - total) / (a[free] @ a[free])
    return np.clip(a * ((s - pivot) - (tau - pivot)), low, high)


def box_section_ref(total, axis, weights, low=0.0, high=None):
    """Each slice onto {low <= z <= high, <weights, z> = total}."""
    return lambda w: per_slice(lambda v: box_section_vector(v, weights, total, low, high), w, axis)


def box_section_cvxpy(v, a, total, low, high):
    """The same projection as cvxpy's QP solution (Clarabel): an independent, less exact reference."""
    import cvxpy as cp

    z = cp.Variable(v.size)
    a = np.asarray(a, "float64").ravel()
    bounds = [z >= low, a @ z == total] + ([] if high is None else [z <= high])
    cp.Problem(cp.Minimize(cp.sum_squares(z - v)), bounds).solve()
    return z.value


def l1_sphere_ref(radius, axis):
    """Each slice onto {||z||_1 = radius}: the simplex projection of |v|, signs kept (+ for 0)."""

    def vector(v):
        if radius == 0:  # the sphere is the point 0
            return np.zeros_like(v)
        return np.where(v < 0, -1.0, 1.0) * simplex_vector(np.abs(v), radius)

    return lambda w: per_slice(vector, w, axis)


def l1_sphere_brute_force(v, radius):
    """The nearest points of {||z||_1 = radius} to `v`, by enumerating the faces of the sphere.

    A face is a sign pattern on a support (3^n of them): its relative
    interior's nearest point to `v` is the projection onto the face's affine
    hull `{z_i = 0 off the support, sum_support s_i z_i = radius}` when that
    keeps the signs. The nearest point of the sphere lies in some face's
    relative interior, so the best such candidate is it. Returns the
    smallest distance and every candidate at that distance (ties at zeros).
    """
    best, points = np.inf, []
    for signs in itertools.product((-1.0, 0.0, 1.0), repeat=v.size):
        s = np.array(signs)
        support = s != 0
        if not support.any():
            continue
        z = np.zeros_like(v)
        z[support] = v[support] - (s[support] @ v[support] - radius) / support.sum() * s[support]
        if np.any(s[support] * z[support] < 0):
            continue
        d = float(np.linalg.norm(z - v))
        if d < best - 1e-12:
            best, points = d, [z]
        elif d <= best + 1e-12:
            points.append(z)
    return best, points


# ----------------------------------------------------------------- order


def pava(y):
    """Pool adjacent violators (Ayer et al. 1955), float64, with a stack of blocks."""
    sums, counts = [], []
    for v in y:
        sums.append(float(v))
        counts.append(1)
        while len(sums) > 1 and sums[-2] / counts[-2] > sums[-1] / counts[-1]:
            s, c = sums.pop(), counts.pop()
            sums[-1] += s
            counts[-1] += c
    return np.concatenate([np.full(c, s / c) for s, c in zip(sums, counts, strict=True)])


def monotonic_ref(axis, increasing=True):
    """Isotonic regression of each slice along `axis`."""
    sign = 1.0 if increasing else -1.0
    return lambda w: sign * np.apply_along_axis(pava, axis, sign * w)


def unimodal_vector(v, peak=True):
    """Unimodal regression by brute force over the splits (Stout 2008), float64.

    For each m, PAV rising on `v[:m + 1]` and falling on `v[m + 1:]`; the
    split of least squared error, the first one on ties. A valley is the
    peak of `-v`, negated.
    """
    sign = 1.0 if peak else -1.0
    v = sign * np.asarray(v, dtype="float64")
    best, fit = np.inf, v
    for m in range(v.size):
        tail = -pava(-v[m + 1 :]) if m + 1 < v.size else v[:0]
        z = np.concatenate([pava(v[: m + 1]), tail])
        error = float(np.sum((z - v) ** 2))
        if error < best:
            best, fit = error, z
    return sign * fit


def unimodal_ref(axis, peak=True):
    """Each slice along `axis` onto the sequences that rise then fall (`peak=False`: fall then rise)."""
    return lambda w: np.apply_along_axis(unimodal_vector, axis, w, peak)


# ---------------------------------------------------------------- matrices


def per_matrix(fn, batched=False):
    """Lift `fn` on float64 matrices to kernels: reshape (rank > 2) or stack over leading axes."""

    def ref(w):
        w = np.asarray(w, dtype="float64")
        if w.ndim > 2 and not batched:
            return fn(w.reshape(-1, w.shape[-1])).reshape(w.shape)
        flat = w.reshape(-1, *w.shape[-2:])
        return np.stack([fn(m) for m in flat]).reshape(w.shape)

    return ref


def _svd(m):
    return np.linalg.svd(m, full_matrices=False)


def polar(scale=1.0):
    """The nearest matrix with every singular value equal to `scale`: scale * U V^T."""

    def fn(m):
        u, _, vt = _svd(m)
        return scale * u @ vt

    return fn


def clip_singular_values(c):
    """The nearest matrix with spectral norm <= c: singular values clipped at c."""

    def fn(m):
        u, s, vt = _svd(m)
        return (u * np.minimum(s, c)) @ vt

    return fn


def sigma1(m):
    """The largest singular value."""
    return np.linalg.svd(m, compute_uv=False)[0]


def rescale(c):
    """The whole matrix scaled down until its spectral norm is c (not a projection)."""
    return lambda m: m * min(1.0, c / max(sigma1(m), 1e-300))


def gram(c, iterations):
    """The "gram" method in float64, with the exact sigma_1 standing in where it is undecided."""

    def fn(m):
        side = m if m.shape[0] >= m.shape[1] else m.T
        fro = np.linalg.norm(side)
        if fro == 0:
            return m
        g = (side / fro).T @ (side / fro)
        log_bound = 0.0
        for i in range(iterations):
            f = np.linalg.norm(g)
            log_bound += 2.0**-i * np.log(f)
            g = g / f
            g = g.T @ g
        upper = fro * np.exp(0.5 * (log_bound + 2.0**-iterations * np.log(np.linalg.norm(g))))
        v = g[:, np.argmax(np.linalg.norm(g, axis=0))]
        lower = np.linalg.norm(side @ v) / np.linalg.norm(v)
        if upper <= c:
            return m
        if lower > c:
            return m * (c / upper)
        return rescale(c)(m)

    return fn


def symmetric(m):
    """The nearest symmetric matrix."""
    return (m + m.T) / 2


def psd(m):
    """The nearest positive semi-definite matrix: negative eigenvalues of the symmetric part to 0."""
    lam, v = np.linalg.eigh(symmetric(m))
    return (v * np.maximum(lam, 0)) @ v.T


def low_rank(r):
    """The nearest matrix of rank <= r: the truncated SVD."""

    def fn(m):
        u, s, vt = _svd(m)
        return (u[:, :r] * s[:r]) @ vt[:r]

    return fn


# ------------------------------------------------------------- intersections


def nonneg_then_max_norm(max_value, axis):
    """The exact projection onto {w >= 0} ∩ {||w_slice|| <= max_value}."""
    ball = max_norm_ref(max_value, axis)
    return lambda w: ball(np.maximum(w, 0))


def box_and_mean_ref(low, high, mean):
    """The exact projection onto {low <= w <= high, mean(w) = mean}: clip(w - lam), lam by bisection."""

    def ref(w):
        lo, hi = w.min() - high, w.max() - low
        for _ in range(200):
            lam = (lo + hi) / 2
            lo, hi = (lam, hi) if np.clip(w - lam, low, high).mean() > mean else (lo, lam)
        return np.clip(w - (lo + hi) / 2, low, high)

    return ref


# --------------------------------------------------------------- violation


def violation(variable):
    """max |w - P(w)| in float64, computed apart from `kc.violations`: 0 exactly when w is in the set."""
    w = variable.value
    return float(np.max(np.abs(to_np(w) - to_np(variable.constraint(w))), initial=0.0))


# ---------------------------------------------------- spectral bands and skew


def singular_value_band(low, high=None):
    """The nearest matrix with every singular value in [low, high]: the singular values clipped."""

    def fn(m):
        u, s, vt = _svd(m)
        return (u * np.clip(s, low, np.inf if high is None else high)) @ vt

    return fn


def eigen_band(low=None, high=None):
    """The nearest symmetric matrix with every eigenvalue in [low, high]: the symmetric part's clipped."""

    def fn(m):
        lam, v = np.linalg.eigh(symmetric(m))
        lo, hi = -np.inf if low is None else low, np.inf if high is None else high
        return (v * np.clip(lam, lo, hi)) @ v.T

    return fn


def skew(m):
    """The nearest skew-symmetric matrix."""
    return (m - m.T) / 2


# ------------------------------------------------------------- affine sets


def hyperplane_ref(normal, offset, axis):
    """Each slice onto {<a, z> = offset}; `normal=None` is all ones."""

    def vector(v):
        a = np.ones_like(v) if normal is None else np.asarray(normal, "float64").ravel()
        return v - (a @ v - offset) / (a @ a) * a

    return lambda w: per_slice(vector, w, axis)


def halfspace_ref(normal, offset, axis):
    """Each slice onto {<a, z> <= offset}: unchanged inside, onto the hyperplane outside."""

    def vector(v):
        a = np.ones_like(v) if normal is None else np.asarray(normal, "float64").ravel()
        return v if a @ v <= offset else v - (a @ v - offset) / (a @ a) * a

    return lambda w: per_slice(vector, w, axis)


def affine_set_ref(matrix, offset, axis):
    """Each slice onto {A z = b}: z - A^+ (A z - b), through NumPy's pseudo-inverse."""
    a = np.asarray(matrix, "float64")
    a = a.reshape(a.shape[0], -1)
    b = np.broadcast_to(np.asarray(offset, "float64"), (a.shape[0],))
    pinv = np.linalg.pinv(a)
    return lambda w: per_slice(lambda v: v - pinv @ (a @ v - b), w, axis)


def radial_rings(spatial):
    """For each tap of a kernel of `spatial` shape (flat, C order), the index of its ring:
    the taps at one Euclidean distance from the centre `(n - 1) / 2` of every axis."""
    grid = np.indices(spatial).reshape(len(spatial), -1).T
    squared = np.sum((grid - (np.asarray(spatial) - 1) / 2) ** 2, axis=1)  # exact: half-integers
    return np.unique(squared, return_inverse=True)[1].ravel()


def radial_ref(w):
    """Each (in, out) kernel of a Conv kernel `(*spatial, in, out)` onto the kernels equal on each
    ring: the least-squares fit of the ring indicators (np.linalg.lstsq), not the means."""
    ring = radial_rings(w.shape[:-2])
    basis = np.eye(ring.max() + 1)[ring]  # (taps, rings)
    flat = w.reshape(len(ring), -1)
    return (basis @ np.linalg.lstsq(basis, flat, rcond=None)[0]).reshape(w.shape)


def polyhedron_vector(v, a, b, g, h):
    """The point of `{A z = b, G z <= h}` nearest `v`: cvxpy's QP (Clarabel), then polished.

    The problem is solved scaled by `s = max(1, |v|)`, so that inputs of 1e30
    meet data of size 1. Clarabel stops at about 1e-8 (an active row left
    4e-8 inside), so its active rows, by their multipliers and then by their
    slack, are solved as equalities by float64 least squares on the KKT
    system; the first that is feasible with multipliers >= 0 (to 1e-12 and
    1e-9), i.e. optimal, is the answer: exact to float64 rounding.
    """
    import cvxpy as cp

    s = max(1.0, float(np.max(np.abs(v))))
    n = v.size
    a = np.zeros((0, n)) if a is None else np.asarray(a, "float64")
    g = np.zeros((0, n)) if g is None else np.asarray(g, "float64")
    b = np.broadcast_to(np.asarray(0.0 if b is None else b, "float64"), (len(a),)) / s
    h = np.broadcast_to(np.asarray(0.0 if h is None else h, "float64"), (len(g),)) / s
    v = v / s
    z = cp.Variable(n)
    rows = [a @ z == b] if len(a) else []
    bound = g @ z <= h
    tight = {k: 1e-10 for k in ("tol_gap_abs", "tol_gap_rel", "tol_feas", "tol_ktratio")}
    problem = cp.Problem(cp.Minimize(cp.sum_squares(z - v)), rows + ([bound] if len(g) else []))
    problem.solve(solver="CLARABEL", **tight)
    x = z.value
    if not len(g):
        return s * x
    dual = np.asarray(bound.dual_value).ravel()
    for active in (dual > 1e-7 * max(1.0, dual.max()), g @ x >= h - 1e-8):
        c = np.vstack([a, g[active]])
        kkt = np.block([[np.eye(n), c.T], [c, np.zeros((len(c), len(c)))]])
        solution = np.linalg.lstsq(kkt, np.concatenate([v, b, h[active]]), rcond=None)[0]
        polished = solution[:n]
        feasible = np.all(g @ polished <= h + 1e-12) and np.allclose(a @ polished, b, atol=1e-12)
        if feasible and _optimal(v - polished, a, g[active]):
            return s * polished
    return s * x


def _optimal(gap, a, g):
    """`gap = a^T nu + g^T mu` for some `nu` and `mu >= 0` (to 1e-10): KKT holds.

    The multipliers of a degenerate vertex (more active rows than the
    dimension) are not unique, so they are found by bounded least squares.
    """
    from scipy.optimize import lsq_linear

    c = np.vstack([a, g]).T
    if not c.size:
        return np.linalg.norm(gap) <= 1e-10
    low = np.r_[np.full(len(a), -np.inf), np.zeros(len(g))]
    fit = lsq_linear(c, gap, bounds=(low, np.inf), tol=1e-14, lsmr_tol="auto")
    return np.linalg.norm(c @ fit.x - gap) <= 1e-10 * max(1.0, np.linalg.norm(gap))


def polyhedron_ref(a, b, g, h, axis):
    """Each slice onto `{A z = b, G z <= h}` (`polyhedron_vector`); None for no rows."""
    return lambda w: per_slice(lambda v: polyhedron_vector(v, a, b, g, h), w, axis)


# ------------------------------------------------------- doubly stochastic


def birkhoff(m, tol=1e-13, max_sweeps=200_000):
    """The Euclidean projection onto the doubly stochastic matrices, in float64.

    Dykstra's alternating projections (Boyle & Dykstra 1986) between the
    matrices whose rows lie on the simplex and those whose columns do, each
    projection by `simplex_vector`; run until a sweep moves nothing (a
    different algorithm from the library's dual ascent).
    """
    x = np.array(m, dtype="float64")
    tol = tol * max(1.0, np.abs(x).max())
    p, q = np.zeros_like(x), np.zeros_like(x)
    for _ in range(max_sweeps):
        y = np.stack([simplex_vector(r, 1.0) for r in x + p])
        p = x + p - y
        z = np.stack([simplex_vector(c, 1.0) for c in (y + q).T]).T
        q = y + q - z
        done = np.abs(z - x).max() <= tol and np.abs(z.sum(axis=1) - 1).max() <= tol
        x = z
        if done:
            return x
    raise RuntimeError("birkhoff: Dykstra did not converge")


# ------------------------------------------------------ convolution norms (lipschitz.py)


def conv_matrix(kernel, n, stride=1, padding="same"):
    """The matrix of a zero-padded convolution (Keras semantics) on an input of side `n`.

    `kernel` is `(*spatial, in, out)`; the input `(n,) * d + (in,)` and the output are
    flattened row-major. Built tap by tap in float64: output position p reads input
    position p * stride - pad_before + u through the tap u.
    """
    kernel = np.asarray(kernel, dtype="float64")
    spatial, (cin, cout) = kernel.shape[:-2], kernel.shape[-2:]
    sides, before = [], []
    for k in spatial:
        if padding == "same":
            out = -(-n // stride)
            before.append(max((out - 1) * stride + k - n, 0) // 2)
        else:
            out = (n - k) // stride + 1
            before.append(0)
        sides.append(out)
    matrix = np.zeros((n ** len(spatial) * cin, int(np.prod(sides)) * cout))
    for p in np.ndindex(*sides):
        for u in np.ndindex(*spatial):
            q = [pi * stride - b + ui for pi, b, ui in zip(p, before, u, strict=True)]
            if all(0 <= qi < n for qi in q):
                row = np.ravel_multi_index(tuple(q), (n,) * len(spatial)) * cin
                col = np.ravel_multi_index(p, sides) * cout
                matrix[row : row + cin, col : col + cout] += kernel[u]
    return matrix


def symbol_sup(kernel, size=256):
    """max sigma_1 of the kernel's symbol on a fine FFT grid: the norm at large inputs."""
    kernel = np.asarray(kernel, dtype="float64")
    axes = tuple(range(kernel.ndim - 2))
    f = np.fft.fftn(kernel, s=(size,) * len(axes), axes=axes)
    return np.linalg.svd(f.reshape(-1, *kernel.shape[-2:]), compute_uv=False)[:, 0].max()


def conv_bound_ref(kernel, iterations=6, grid_tolerance=0.02):
    """`conv_norm_bound` in float64: FFT on the grid, complex Gram iteration, the grid factor.

    The grid has N_i = ceil(pi d (k_i - 1) / (2 s_max)) points on each axis with k_i > 1,
    d such axes, s_max from 1 / (1 - s_max^2 / 2) = 1 + grid_tolerance; the bound is
    the largest per-frequency Gram bound / (1 - s^2 / 2), s = (pi / 2) sum (k_i - 1) / N_i,
    times the rounding margin 1 + (taps + in + out) 2^-23.
    """
    kernel = np.asarray(kernel, dtype="float64")
    spatial = kernel.shape[:-2]
    active = sum(k > 1 for k in spatial)
    s_max = np.sqrt(2 * (1 - 1 / (1 + grid_tolerance)))
    sizes = [1 if k == 1 else int(np.ceil(np.pi * active * (k - 1) / (2 * s_max))) for k in spatial]
    s = sum(np.pi * (k - 1) / (2 * n) for k, n in zip(spatial, sizes, strict=True))
    axes = tuple(range(len(spatial)))
    symbols = np.fft.fftn(kernel, s=sizes, axes=axes).reshape(-1, *kernel.shape[-2:])
    best = 0.0
    for m in symbols:
        fro = np.linalg.norm(m)
        if fro == 0:
            continue
        m = m / fro
        g = m @ m.conj().T if m.shape[0] <= m.shape[1] else m.conj().T @ m
        log_bound = 0.0
        for i in range(iterations):
            f = np.linalg.norm(g)
            log_bound += 2.0**-i * np.log(f)
            g = g / f
            g = g @ g
        log_bound += 2.0**-iterations * np.log(np.linalg.norm(g))
        best = max(best, fro * np.exp(0.5 * log_bound))
    margin = 1 + (np.prod(spatial) + sum(kernel.shape[-2:])) * 2.0**-23
    return best / (1 - s * s / 2) * margin


def conv_spectral_norm_ref(max_value, iterations=6, grid_tolerance=0.02):
    """The kernel scaled down by max_value / bound when its bound is above max_value."""

    def ref(w):
        bound = conv_bound_ref(w, iterations, grid_tolerance)
        return w * (max_value / bound if bound > max_value else 1.0)

    return ref


def aol_ref(w):
    """AOL in float64: each input row/channel j scaled by (sum_tau sum_i |P[tau]_ij|)^(-1/2).

    P = W W^T for a Dense kernel; for a Conv kernel P[tau] = sum_t K[t] K[t + tau]^T over
    the taps t with t + tau inside the kernel, written as plain loops.
    """
    w = np.asarray(w, dtype="float64")
    if w.ndim == 2:
        sums = np.abs(w @ w.T).sum(axis=0)
    else:
        spatial = w.shape[:-2]
        sums = np.zeros(w.shape[-2])
        for tau in np.ndindex(*(2 * k - 1 for k in spatial)):
            tau = tuple(t - (k - 1) for t, k in zip(tau, spatial, strict=True))
            p = np.zeros((w.shape[-2], w.shape[-2]))
            for t in np.ndindex(*spatial):
                s = tuple(a + b for a, b in zip(t, tau, strict=True))
                if all(0 <= si < k for si, k in zip(s, spatial, strict=True)):
                    p += w[t] @ w[s].T
            sums += np.abs(p).sum(axis=0)
    d = 1 / np.sqrt(np.where(sums > 0, sums, 1.0))
    return w * d[:, None]


# ---------------------------------------------------------------- sparsity


def top_k_vector(v, k):
    """The k largest magnitudes of `v` kept, the rest 0; ties go to the lower index (stable sort)."""
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def top_k_ref(k=None, density=None, axis=None):
    """Each slice with its k largest magnitudes kept; `density` keeps round(density * n), halves up, >= 1."""

    def vector(v):
        kept = k if k is not None else max(1, int(np.floor(density * v.size + 0.5)))
        return top_k_vector(v, kept)

    return lambda w: per_slice(vector, w, axis)


def n_m_ref(n, m, axis):
    """Each group of m consecutive entries along `axis` with its n largest magnitudes kept."""

    def vector(v):
        return np.concatenate([top_k_vector(group, n) for group in v.reshape(-1, m)])

    return lambda w: per_slice(vector, w, axis)


def sparse_simplex_vector(v, k, total):
    """Kyrillidis et al. (2013), Thm 1: the k largest entries (ties: lower index) onto the simplex, 0 elsewhere."""
    keep = np.argsort(-v, kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = simplex_vector(v[keep], total)
    return out


def sparse_simplex_ref(k, total, axis):
    """Each slice onto {z >= 0, sum(z) = total, at most k nonzeros}."""
    return lambda w: per_slice(lambda v: sparse_simplex_vector(v, k, total), w, axis)


def sparse_simplex_distance(v, k, total):
    """The least squared distance from `v` to the sparse simplex, by brute force over every
    support of 1 to k entries (the simplex projection on each): the theorem not assumed."""
    best = np.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(v.size), size):
            inside = np.zeros(v.size, dtype=bool)
            inside[list(support)] = True
            z = simplex_vector(v[inside], total)
            best = min(best, np.sum((v[inside] - z) ** 2) + np.sum(v[~inside] ** 2))
    return best


def _shift(v, total=1.0):
    """Duchi et al. (2008): the theta with sum(max(v - theta, 0)) = total, in float64.

    Shifted by the largest entry first, which keeps it exact: without that,
    the test `u * j > css - total` rounded to no index at all for entries of
    1e16 (found by kconstraints.testing's generated inputs).
    """
    top = np.max(v)
    u = np.sort(v - top)[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u * np.arange(1, v.size + 1) > css - total)[0][-1]
    return top + (css[rho] - total) / (rho + 1)


def transport_sweeps(row_sums, col_sums, iterations):
    """Transport's map in float64, written apart: `iterations` sweeps of dual block ascent on
    `max(W - u_i - v_j, 0)`, then Altschuler, Weed & Rigollet's (2017) rounding (Alg. 2)."""
    r = np.asarray(row_sums, dtype="float64")
    c = np.asarray(col_sums, dtype="float64")
    c = c * (r.sum() / c.sum())

    def fn(m):
        v = np.zeros(m.shape[1])
        for _ in range(iterations):
            u = np.array([_shift(row, t) for row, t in zip(m - v[None, :], r, strict=True)])
            v = np.array([_shift(col, t) for col, t in zip((m - u[:, None]).T, c, strict=True)])
        p = np.maximum(m - u[:, None] - v[None, :], 0)
        rows = p.sum(axis=1, keepdims=True)
        p = np.where(rows > r[:, None], p / np.where(rows > 0, rows, 1) * r[:, None], p)
        columns = p.sum(axis=0, keepdims=True)
        p = np.where(columns > c[None, :], p / np.where(columns > 0, columns, 1) * c[None, :], p)
        short_rows = np.maximum(r - p.sum(axis=1), 0)
        short_columns = np.maximum(c - p.sum(axis=0), 0)
        total = short_rows.sum()
        return p + np.outer(short_rows, short_columns) / (total if total > 0 else 1.0)

    return fn


def doubly_stochastic_sweeps(iterations):
    """DoublyStochastic's map in float64: `transport_sweeps` with every marginal 1."""
    return lambda m: transport_sweeps(np.ones(m.shape[0]), np.ones(m.shape[1]), iterations)(m)


def transport_qp(row_sums, col_sums):
    """The Euclidean projection onto `{X >= 0, X 1 = r, X^T 1 = c}`: cvxpy's QP (Clarabel),
    solved to tolerances of 1e-12."""

    def fn(m):
        import cvxpy as cp

        x = cp.Variable(m.shape)
        constraints = [x >= 0, cp.sum(x, axis=1) == row_sums, cp.sum(x, axis=0) == col_sums]
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - m)), constraints)
        tight = {k: 1e-12 for k in ("tol_gap_abs", "tol_gap_rel", "tol_feas", "tol_ktratio")}
        problem.solve(solver="CLARABEL", **tight)
        return x.value

    return fn


# ------------------------------------------------- spectral norm by power iteration


def power_rescale(c, iterations):
    """SpectralNorm(method="power") in float64, written apart: power iteration on W^T W from the
    largest row, sigma_1 estimated by ||W^T u|| / ||u||, the matrix scaled by min(1, c / estimate)."""

    def fn(m):
        i = int(np.argmax(np.sum(m * m, axis=1)))
        v = m[i].copy()
        estimate = np.linalg.norm(v)
        for _ in range(iterations):
            nv = np.linalg.norm(v)
            u = m @ (v / (nv if nv > 0 else 1.0))
            v = m.T @ u
            nu = np.linalg.norm(u)
            estimate = np.linalg.norm(v) / (nu if nu > 0 else 1.0)
        return m * (c / estimate if estimate > c else 1.0)

    return fn
