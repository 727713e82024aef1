"""Matrix constraints: the weight is a matrix, constrained through its singular values.

Lipschitz-bounded and orthogonal layers (certified robustness, WGAN
critics, stable recurrent networks) need the spectral norm or the singular
values of a kernel held in place after every step.

Which matrix a kernel is. A Dense kernel `(input_dim, units)` is the
matrix. A kernel of rank > 2 is, by default (`batched=False`), the one
matrix of shape `(prod(shape[:-1]), shape[-1])`: one column per output unit.
For a Conv2D kernel `(rows, cols, in_channels, filters)` that is
`(rows * cols * in_channels, filters)`. For a convolution this bounds that
reshaped matrix, not the norm of the convolution operator: with stride 1
every input pixel enters `rows * cols` patches, so the operator's norm is at
most `sqrt(rows * cols)` times the reshaped matrix's (and no more than that
for larger strides). With `batched=True` the last two axes are the matrix and
the leading axes index a stack of independent matrices (one per spatial tap
of a convolution, or a stack of recurrent kernels).

`Symmetric` and `PSD` act on square matrices in the last two axes, batched
over any leading axes.

Decompositions run in float32 for float16/bfloat16 weights and in the
weight's own dtype otherwise (float64 stays float64); the result has the
weight's dtype and shape. Every method compiles under `jax.jit`, TF XLA and
`torch.compile`. Under TF XLA (`jit_compile=True`) the SVD and eigh are
XLA's own and in float64 only about float32-accurate: measured against
NumPy's float64 results on 8 x 5 and 5 x 5 matrices, `Orthogonal` was off
by 2e-7 and `PSD` by 9e-7 there, against 1e-15 eagerly; float32 results
(~3e-7) are as accurate compiled as eager on every backend.

Speed under TF XLA on a CPU: XLA runs the SVD as its own Jacobi iteration
rather than LAPACK, measured (2 cores, TensorFlow 2.21) at 11 s per call
for a 256 x 256 kernel and 250 s for the first call at 512 x 512, where JAX
takes 6 ms and 30 ms. There, prefer the matmul-only methods
(`SpectralNorm(method="gram")`, `Orthogonal(method="newton_schulz")`) or
`compile(jit_compile=False)`.
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from kconstraints._base import (
    Constraint,
    check_number,
    l2_norms,
    register,
    safe_divisor,
    scalar,
    upcast,
)


def _t(x):
    return ops.swapaxes(x, -1, -2)


def _fro(x):
    return l2_norms(x, (-2, -1))


def _check_choice(owner, name, value, choices):
    if value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {choices}, got {value!r}.")
    return value


def _check_count(owner, name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: `{name}` must be an integer >= {low}, got {value!r}.")
    return int(value)


def _check_bool(owner, name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: `{name}` must be True or False, got {value!r}.")
    return value


def _matrices(owner, w, batched):
    """The weight as matrices in a float32-or-wider dtype, per the module docstring."""
    if len(w.shape) < 2:
        raise ValueError(
            f"{owner} constrains matrices, but got a weight of shape {tuple(w.shape)} "
            f"({len(w.shape)} dimensions)."
        )
    shape = tuple(w.shape) if batched else (-1, w.shape[-1])
    # Always reshape: on TensorFlow a variable's `.value` is a tf.Variable that
    # passes through `convert_to_tensor` and `cast`, and `keras.ops.svd` rejects it.
    return ops.reshape(upcast(w), shape)


def _square_matrices(owner, w):
    shape = tuple(w.shape)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(
            f"{owner} needs square matrices in the last two axes, but got a weight of "
            f"shape {shape}."
        )
    x = ops.reshape(upcast(w), shape)  # a tensor, never a tf.Variable: see _matrices
    return 0.5 * x + 0.5 * _t(x)  # halves first: no overflow, and exact when x is symmetric


def _svd(x):
    u, s, vt = ops.svd(x, full_matrices=False)
    return u, s, vt


def _compose(u, s, vt):
    # `@`, not ops.matmul: Keras 3.15 turns a float64 ops.matmul into float32 on torch.
    return (u * s[..., None, :]) @ vt


def _eps(x):
    return {"float32": 2.0**-23, "float64": 2.0**-52}[keras.backend.standardize_dtype(x.dtype)]


def _gram_upper(x, iterations):
    """A certified upper bound on the largest singular value of each matrix, by Gram iteration.

    Gram iteration (Delattre, Barthelemy, Araujo, Allauzen 2023, "Efficient
    Bound of Lipschitz Constant for Convolutional Layers by Gram Iteration",
    ICML): sigma_1(G)^2 = sigma_1(G^T G) and sigma_1 <= ||.||_F, so after t
    squarings sigma_1(W) <= ||G_t||_F ** (1 / 2**t), a bound that tightens
    as t grows. Here G_0 = W, G_1 is the Gram matrix of the smaller side and
    `iterations` counts the squarings after it (t = iterations + 1). Each G
    is rescaled to unit Frobenius norm before it is squared, and the scales
    are summed in the log domain, so nothing overflows. In exact arithmetic
    the bound exceeds sigma_1 by at most the factor
    k ** (1 / 2**(iterations + 2)), k the smaller side, reached when all k
    singular values are equal. Returns `(bound, g)` with shape
    `batch + (1, 1)` and `g` the last (normalized) Gram iterate, which is
    proportional to `(W^T W) ** (2**iterations)` (or `W W^T`, on the smaller
    side).
    """
    fro = _fro(x)
    y = x / safe_divisor(fro)
    g = _t(y) @ y if x.shape[-2] >= x.shape[-1] else y @ _t(y)
    if min(x.shape[-2:]) == 1:
        # A row or column: sigma_1 = ||x||_F, and the bound is exact without squaring.
        # (Squaring 1 x 1 matrices also makes Inductor fuse a chain whose size
        # doubles per step: torch.compile did not finish in 5 minutes.)
        iterations = 0
    log_bound = ops.zeros_like(fro)
    for i in range(iterations):
        f = _fro(g)
        log_bound = log_bound + 2.0**-i * ops.log(safe_divisor(f))
        g = g / safe_divisor(f)
        g = _t(g) @ g
    log_bound = log_bound + 2.0**-iterations * ops.log(safe_divisor(_fro(g)))
    # log_bound bounds log sigma_1(y)^2, and sigma_1(x) = ||x||_F sigma_1(y).
    return fro * ops.exp(0.5 * log_bound), g


def _lower_estimate(x, g):
    """||x v|| / ||v|| <= sigma_1(x) for any v; v is the largest column of the Gram iterate g.

    That column is `(W^T W)**(2**iterations) e_j`: 2**iterations steps of
    power iteration at no extra cost, so the estimate is close to sigma_1
    (from below) unless the top singular values are nearly tied.
    """
    cols = ops.sqrt(ops.sum(ops.square(g), axis=-2))
    pick = ops.one_hot(ops.argmax(cols, axis=-1), g.shape[-1], dtype=g.dtype)
    v = g @ pick[..., :, None]
    side = x if x.shape[-2] >= x.shape[-1] else _t(x)
    return _fro(side @ v) / safe_divisor(_fro(v))


def _largest_singular_value(x):
    # Every backend returns the singular values in descending order.
    return ops.svd(x, compute_uv=False)[..., :1, None]


def _cond(pred, true_fn, false_fn, operands):
    """`keras.ops.cond` of `fn(*operands)`, except on torch, where it is `torch.cond`.

    A documented workaround, the one backend-specific line of the package.
    On torch `keras.ops.cond` is a Python `if` on the tensor: torch.compile
    breaks the graph there, and inside the optimizer's update (a no-grad
    context) it then gives up and runs the whole update eagerly. Worse,
    `keras.ops.cond` names a new Keras `Operation` at every call and
    torch.compile guards on Keras's global name counter, so every call
    recompiled. `torch.cond` traces both branches into one graph (eager
    torch runs a Python branch, which costs nothing there); the
    branches take every value as a tensor operand, because torch.compile may
    turn a captured Python float into a symbolic one, which `torch.cond`
    refuses.
    """
    if keras.backend.backend() == "torch":
        import torch

        if not torch.compiler.is_compiling():
            return true_fn(*operands) if bool(pred) else false_fn(*operands)
        # A constraint is not differentiated (Penalty stops its gradient), and
        # torch.cond on inputs that require grad fails inside Dynamo.
        operands = tuple(ops.stop_gradient(o) for o in operands)
        return torch.cond(pred, true_fn, false_fn, operands)
    return ops.cond(pred, lambda: true_fn(*operands), lambda: false_fn(*operands))


def _shrink_factor(s1, c):
    """min(1, c / s1), exactly 1 when s1 <= c; `c` a 0-d tensor."""
    return ops.where(s1 > c, c / safe_divisor(s1), ops.ones_like(s1))


def _newton_schulz_polar(x, iterations):
    """The orthogonal polar factor U V^T by the Newton-Schulz / Bjorck iteration.

    X <- X (3 I - X^T X) / 2 (Bjorck and Bowie 1971, "An iterative algorithm
    for computing the best estimate of an orthogonal matrix", SIAM J. Numer.
    Anal. 8(2); Higham 2008, "Functions of Matrices", section 8.3) maps each
    singular value s to s (3 - s^2) / 2 and keeps the singular vectors, so it
    drives every nonzero s in (0, sqrt(3)) to 1: by the factor 1.5 per step
    while s is small, then quadratically. The start divides by a certified
    bound on sigma_1 (two Gram steps) to be inside that interval, and so the
    count of steps needed grows with log(condition number). Matmuls only.
    """
    wide = x.shape[-2] < x.shape[-1]
    if wide:
        x = _t(x)
    bound, _ = _gram_upper(x, 2)
    y = x / safe_divisor(bound)
    for _ in range(iterations):
        y = 1.5 * y - 0.5 * (y @ (_t(y) @ y))
    return _t(y) if wide else y


@register
class Orthogonal(Constraint):
    """Orthonormal columns (or rows) times `scale`: the projection onto scaled Stiefel matrices.

    For a matrix `W` of shape `(m, n)` with `m >= n` the set is
    `{Q : Q^T Q = scale**2 I}` (orthonormal columns, times `scale`); for a
    wide matrix, `{Q : Q Q^T = scale**2 I}` (orthonormal rows). The
    projection is `P(W) = scale * U V^T` from the thin SVD `W = U S V^T`: the
    orthogonal polar factor (Higham 2008, "Functions of Matrices", Thm 8.4).
    Every singular value of the result is `scale`, so a Dense layer with
    this kernel and `scale=1` is 1-Lipschitz, and preserves norms when
    `input_dim <= units`. The set is not convex; for a rank-deficient `W` the nearest
    point is not unique and the SVD picks one (the zero matrix gives some
    orthogonal matrix, never NaN).

    Methods:

    - `"svd"` (default): the exact polar factor from `keras.ops.svd`.
    - `"newton_schulz"`: matmul-only (fast on accelerators, no
      decomposition), the Bjorck / Newton-Schulz iteration for `iterations`
      steps. Its error shrinks with the count of steps and grows with the
      condition number of `W`. Measured in float32 (JAX, CPU) as the
      largest entry of `|NS(W) - U V^T|`: Gaussian 256 x 128 (condition
      number 6): 8e-3 after 5 steps, 2e-7 after 10; Gaussian 128 x 128
      (condition number 955): 4e-2 after 15, 9e-6 after 20, 3e-7 after 25;
      Gaussian 1024 x 1024 (condition number 2515): 2e-3 after 20, 3e-7
      after 25. During training the kernel stays near the set: the polar
      factor plus a 1% perturbation is at 1e-4 after 3 steps and 1e-7
      after 5. Each step costs two matmuls of `m n^2`. A singular `W`
      gives zeros in its null space, not an orthogonal matrix.

    Cost, measured on one 1024 x 1024 float32 kernel (JAX jit, 2 CPU
    cores): `"svd"` 0.25 s, `"newton_schulz"` 0.31 s (25 steps). On CPU
    the SVD is as fast; the iteration gains on accelerators, or with fewer
    steps once training keeps the kernel near the set: a train step of a
    3-layer 1024-wide MLP (batch 64) took 0.67 s with `"svd"`, 0.90 s with
    25 steps and 0.39 s with 10.

    Args:
        scale: every singular value of the result (> 0).
        method: `"svd"` or `"newton_schulz"`.
        iterations: the count of Newton-Schulz steps (used by
            `"newton_schulz"` only).
        batched: how a kernel of rank > 2 is read (see the module
            docstring): `False`, one matrix `(prod(shape[:-1]),
            shape[-1])`; `True`, a stack of matrices in the last two axes.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    >>> q = kconstraints.Orthogonal()(w)
    >>> keras.ops.convert_to_numpy(q).astype(float).round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """

    def __init__(self, scale=1.0, method="svd", iterations=25, batched=False):
        name = type(self).__name__
        check_number(name, "scale", scale, low=0, low_open=True)
        self.scale = scale
        self.method = _check_choice(name, "method", method, ("svd", "newton_schulz"))
        self.iterations = _check_count(name, "iterations", iterations)
        self.batched = _check_bool(name, "batched", batched)

    def project(self, w):
        x = _matrices(type(self).__name__, w, self.batched)
        if self.method == "svd":
            u, _, vt = _svd(x)
            q = u @ vt
        else:
            q = _newton_schulz_polar(x, self.iterations)
        return ops.reshape(self.scale * q, w.shape)


@register
class SpectralNorm(Constraint):
    """Bounded spectral norm: the largest singular value of the matrix is at most `max_value`.

    The set is the spectral-norm ball `{W : sigma_1(W) <= max_value}`, so a
    Dense layer with such a kernel is `max_value`-Lipschitz in the Euclidean
    norm (what Lipschitz networks, WGAN critics and certified-robust models
    need). Unlike `keras.layers.SpectralNormalization`, which divides by a
    power-iteration estimate that may be below the true norm, every method
    here guarantees the bound (to floating-point rounding), and a weight
    already inside the ball is returned unchanged (bit for bit) by every
    method.

    Methods, from exact to fast:

    - `"svd"` (default): the Euclidean projection, clipping the singular
      values: `P(W) = U min(S, max_value) V^T`. One full SVD per call.
    - `"scale"`: the exact largest singular value from the singular values
      alone (no singular vectors), then `W * min(1, max_value / sigma_1)`.
      Not the nearest point: it shrinks every singular value, not only the
      large ones.
    - `"gram"`: matmul-only. A certified upper bound `b >= sigma_1` by
      `iterations` steps of Gram iteration (Delattre et al. 2023) and a lower
      estimate `l <= sigma_1` from the same iterates. If `b <= max_value`
      the weight is certified inside and returned as it is; if `l` exceeds
      `max_value` it is certified outside and rescaled by `max_value / b`
      (feasible, since `b >= sigma_1`; it may shrink by up to the bound's
      slack). In between the bound can not decide, and rescaling there
      would shrink weights that are already inside, so the exact
      `sigma_1` decides, as in `"scale"` (computed only then, by
      a `cond`, which stays inside the compiled graph). Measured in float32 on
      Gaussian 1024 x 1024 and 576 x 64 matrices, the bound's relative
      excess is ~1e-3 after 6 steps and ~1e-6 after 8, and the lower
      estimate is as close; the undecided band is widest when the top
      singular values are tied (after an `"svd"` projection, or an
      orthogonal initialisation): up to the factor
      `k ** (1 / 2**(iterations + 2))`, k the smaller side (5e-3 for
      k = 128 and 8 steps). Each step is one `k x k` matmul, so it gains
      most where matmuls are much cheaper than an SVD (GPU, TPU).

    Cost, measured on one 1024 x 1024 float32 kernel (JAX jit, 2 CPU
    cores): `"svd"` 0.22 s, `"scale"` 0.11 s, `"gram"` 0.06 s (a matmul
    takes 0.01 s). In a train step of a 3-layer 1024-wide MLP (batch 64)
    that is 0.68 s, 0.31 s and 0.17 s against 0.006 s unconstrained.

    Args:
        max_value: the largest allowed singular value (>= 0).
        method: `"svd"`, `"scale"` or `"gram"`.
        iterations: Gram iteration steps (used by `"gram"` only).
        batched: how a kernel of rank > 2 is read (see the module
            docstring): `False`, one matrix `(prod(shape[:-1]),
            shape[-1])`; `True`, a stack of matrices in the last two axes,
            each bounded on its own.

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.0], [0.0, 0.5]])
    >>> for method in ["svd", "scale", "gram"]:
    ...     out = kconstraints.SpectralNorm(1.0, method=method)(w)
    ...     print(method, keras.ops.convert_to_numpy(out).astype(float).round(3).tolist())
    svd [[1.0, 0.0], [0.0, 0.5]]
    scale [[1.0, 0.0], [0.0, 0.167]]
    gram [[1.0, 0.0], [0.0, 0.167]]
    """

    def __init__(self, max_value=1.0, method="svd", iterations=8, batched=False):
        name = type(self).__name__
        check_number(name, "max_value", max_value, low=0)
        self.max_value = max_value
        self.method = _check_choice(name, "method", method, ("svd", "scale", "gram"))
        self.iterations = _check_count(name, "iterations", iterations, low=0)
        self.batched = _check_bool(name, "batched", batched)

    def project(self, w):
        x = _matrices(type(self).__name__, w, self.batched)
        c = self.max_value
        if self.method == "svd":
            u, s, vt = _svd(x)
            clipped = _compose(u, ops.where(s > c, ops.full_like(s, c), s), vt)
            out = ops.where(ops.any(s > c, axis=-1)[..., None, None], clipped, x)
        elif self.method == "scale":
            out = x * _shrink_factor(_largest_singular_value(x), scalar(c, x))
        else:
            out = x * self._gram_factor(x)
        return ops.reshape(out, w.shape)

    def _gram_factor(self, x):
        c = self.max_value
        upper, g = _gram_upper(x, self.iterations)
        # The estimate is <= sigma_1 only up to rounding (~sqrt(k) eps): a margin keeps
        # "certified outside" from ever firing on a weight at the boundary.
        margin = 64 * math.sqrt(min(x.shape[-2:])) * _eps(x)
        outside = _lower_estimate(x, g) * (1 - margin) > c
        undecided = ops.logical_and(upper > c, ops.logical_not(outside))
        exact = _cond(
            ops.any(undecided),
            lambda x, c: _shrink_factor(_largest_singular_value(x), c),
            lambda x, c: ops.ones_like(x[..., :1, :1]),
            (x, scalar(c, x)),
        )
        return ops.where(outside, _shrink_factor(upper, scalar(c, x)), exact)


@register
class Symmetric(Constraint):
    """Symmetric matrices: the projection `P(W) = (W + W^T) / 2`.

    The set `{W : W = W^T}` is a linear subspace, and the symmetric part is
    its nearest point. It acts on the last two axes, which must be equal,
    batched over any leading axes.

    Returns:
        A tensor of the weight's shape and dtype, exactly symmetric.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [0.0, 3.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Symmetric()(w)).astype(float).tolist()
    [[1.0, 1.0], [1.0, 3.0]]
    """

    def project(self, w):
        return _square_matrices(type(self).__name__, w)


@register
class PSD(Constraint):
    """Positive semidefinite matrices: the symmetric part, negative eigenvalues clipped to 0.

    The set is the cone `{W : W = W^T, W >= 0}` (all eigenvalues >= 0), for
    example a covariance or a metric learned with `add_weight`. The
    projection (Higham 1988, "Computing a nearest symmetric positive
    semidefinite matrix") takes the symmetric part `S = (W + W^T) / 2 =
    V diag(lam) V^T` and returns `V diag(max(lam, 0)) V^T`. It acts on the
    last two axes, which must be equal, batched over any leading axes. A
    symmetric weight whose eigenvalues are all >= 0 is returned unchanged.

    Returns:
        A tensor of the weight's shape and dtype, exactly symmetric.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [2.0, 1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.PSD()(w)).astype(float).round(3).tolist()
    [[1.5, 1.5], [1.5, 1.5]]
    """

    def project(self, w):
        s = _square_matrices(type(self).__name__, w)
        lam, v = ops.eigh(s)
        clipped = _compose(v, ops.where(lam < 0, ops.zeros_like(lam), lam), _t(v))
        clipped = 0.5 * clipped + 0.5 * _t(clipped)
        return ops.where(ops.any(lam < 0, axis=-1)[..., None, None], clipped, s)


@register
class LowRank(Constraint):
    """Rank at most `rank`: the truncated SVD, the Eckart-Young projection.

    The set is `{W : rank(W) <= rank}` and the nearest point in any unitarily
    invariant norm keeps the `rank` largest singular values:
    `P(W) = U diag(s_1, ..., s_rank, 0, ...) V^T` (Eckart and Young 1936).
    The set is not convex; where `s_rank = s_{rank+1}` the nearest point is
    not unique and the SVD picks one. A `rank` at or above the matrix's
    smaller side leaves every weight unchanged.

    Args:
        rank: the largest allowed rank (>= 1).
        batched: `True` to cap the rank of each matrix in the last two
            axes of a kernel of rank > 2 on its own; `False` (default) to
            cap that of the one reshaped matrix (see the module docstring).

    Returns:
        A tensor of the weight's shape and dtype.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.0], [0.0, 1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.LowRank(1)(w)).astype(float).round(3).tolist()
    [[3.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, rank=1, batched=False):
        name = type(self).__name__
        self.rank = _check_count(name, "rank", rank)
        self.batched = _check_bool(name, "batched", batched)

    def project(self, w):
        x = _matrices(type(self).__name__, w, self.batched)
        if self.rank >= min(x.shape[-2:]):
            return ops.reshape(x, w.shape)
        u, s, vt = _svd(x)
        r = self.rank
        return ops.reshape(_compose(u[..., :r], s[..., :r], vt[..., :r, :]), w.shape)
