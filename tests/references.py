"""Float64 NumPy references of every projection, written apart from the library.

Each `*_ref(...)` returns a function `w -> P(w)` on float64 arrays of any
shape; `per_slice` and `per_matrix` lift a function of one vector or one
matrix to a whole kernel. `violation` measures how far a variable is from
its constraint's set.
"""

from __future__ import annotations

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
    """Duchi et al. (2008), Fig. 1: the support size rho, then theta, in float64."""
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
