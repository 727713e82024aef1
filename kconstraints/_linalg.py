"""Matrix kernels for the matrix constraints: Gram iteration, Newton-Schulz, SVD pieces.

Everything here takes matrices in the last two axes (batched over any
leading axes) in float32 or float64, and uses matmuls written `@`, which
keep float64 on every backend (see `_backend.py`).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kconstraints._checks import check_matrix, check_square
from kconstraints._constants import MACHINE_EPSILON
from kconstraints._tensors import l2_norms, safe_divisor, upcast


def as_matrices(owner, w, batched):
    """A weight as matrices in its compute dtype.

    A kernel of rank > 2 is one matrix `(prod(shape[:-1]), shape[-1])`, one
    column per output unit, or, with `batched=True`, a stack of matrices in
    its last two axes. Always a reshape, which turns a TensorFlow variable's
    `.value` into a tensor (see `_backend.py`).
    """
    check_matrix(owner, tuple(w.shape))
    shape = tuple(w.shape) if batched else (-1, w.shape[-1])
    return ops.reshape(upcast(w), shape)


def symmetric_part(owner, w):
    """`(W + W^T) / 2` of square matrices in the last two axes, in the compute dtype."""
    shape = tuple(w.shape)
    check_square(owner, shape)
    x = ops.reshape(upcast(w), shape)  # a tensor, never a tf.Variable: see as_matrices
    return 0.5 * x + 0.5 * transpose(x)  # halves first: no overflow, exact when x is symmetric


def finite_only(fn, x):
    """`fn(x)` for each matrix whose entries are all finite; the others come back as they are.

    torch's SVD and eigh, and TensorFlow's eigh, raise on a matrix holding a
    NaN or an infinity (see `_backend.py`), which would stop a compiled step
    for one bad matrix of a stack. `fn` maps matrices to matrices of the
    same shape.
    """
    finite = ops.all(ops.isfinite(x), axis=(-2, -1), keepdims=True)
    return ops.where(finite, fn(ops.where(finite, x, ops.zeros_like(x))), x)


def transpose(x):
    """The transpose of each matrix in the last two axes."""
    return ops.swapaxes(x, -1, -2)


def frobenius(x):
    """The Frobenius norm of each matrix, shaped `batch + (1, 1)`."""
    return l2_norms(x, (-2, -1))


def machine_epsilon(x):
    """The machine epsilon of `x`'s dtype (`_constants.MACHINE_EPSILON`)."""
    return MACHINE_EPSILON[keras.backend.standardize_dtype(x.dtype)]


def compose_svd(u, s, vt):
    """`U diag(s) V^T` for thin factors."""
    return (u * s[..., None, :]) @ vt


def recomposed_cap(bound, x):
    """The cap to clip singular values to so that `U diag(s) V^T` has `sigma_1 <= bound` to a few ulps.

    The recomposed matrix's sigma_1 exceeds the largest `s` by the rounding
    of the factors' orthogonality and of the product, which grows with the
    smaller side `k`: up to 17 ulps in float64 and 30 in float32 (TensorFlow
    at 128 x 128, measured), and so up to 1.0000036 after a clip to 1 in
    float32. Clipping to `bound * (1 - 4 sqrt(k) eps)` absorbs it; the
    weight moves by that relative amount, which is rounding-sized.
    """
    return bound * (1 - 4 * math.sqrt(min(x.shape[-2:])) * machine_epsilon(x))


def largest_singular_value(x):
    """sigma_1 of each matrix, shaped `batch + (1, 1)`, from the singular values alone."""
    # Every backend returns the singular values in descending order.
    return ops.svd(x, compute_uv=False)[..., :1, None]


def shrink_factor(sigma, bound):
    """`min(1, bound / sigma)`, exactly 1 when `sigma <= bound`; `bound` a 0-d tensor."""
    return ops.where(sigma > bound, bound / safe_divisor(sigma), ops.ones_like(sigma))


def gram_upper(x, iterations):
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
    singular values are equal.

    Returns:
        `(bound, g)`: `bound` shaped `batch + (1, 1)`, and `g` the last
        (normalized) Gram iterate, proportional to `(W^T W) ** (2**iterations)`
        (or `W W^T`, on the smaller side).
    """
    fro = frobenius(x)
    y = x / safe_divisor(fro)
    g = transpose(y) @ y if x.shape[-2] >= x.shape[-1] else y @ transpose(y)
    if min(x.shape[-2:]) == 1:
        # A row or column: sigma_1 = ||x||_F, and the bound is exact without squaring.
        # (Squaring 1 x 1 matrices also makes Inductor fuse a chain whose size
        # doubles per step: torch.compile did not finish in 5 minutes.)
        iterations = 0
    log_bound = ops.zeros_like(fro)
    for i in range(iterations):
        f = frobenius(g)
        log_bound = log_bound + 2.0**-i * ops.log(safe_divisor(f))
        g = g / safe_divisor(f)
        g = transpose(g) @ g
    log_bound = log_bound + 2.0**-iterations * ops.log(safe_divisor(frobenius(g)))
    # log_bound bounds log sigma_1(y)^2, and sigma_1(x) = ||x||_F sigma_1(y).
    return fro * ops.exp(0.5 * log_bound), g


def lower_estimate(x, g):
    """||x v|| / ||v|| <= sigma_1(x) for any v; v is the largest column of the Gram iterate g.

    That column is `(W^T W)**(2**iterations) e_j`: 2**iterations steps of
    power iteration at no extra cost, so the estimate is close to sigma_1
    (from below) unless the top singular values are nearly tied.
    """
    columns = ops.sqrt(ops.sum(ops.square(g), axis=-2))
    pick = ops.one_hot(ops.argmax(columns, axis=-1), g.shape[-1], dtype=g.dtype)
    v = g @ pick[..., :, None]
    side = x if x.shape[-2] >= x.shape[-1] else transpose(x)
    return frobenius(side @ v) / safe_divisor(frobenius(v))


def power_estimate(x, iterations):
    """An estimate of sigma_1 of each matrix from below, by power iteration; shaped `batch + (1, 1)`.

    Power iteration on W^T W (Golub & Van Loan 2013, "Matrix Computations",
    section 8.2.1; the step of Miyato et al. 2018, "Spectral Normalization
    for Generative Adversarial Networks", ICLR, made stateless). The start is
    the row of W of largest norm, `v = W^T e_i`: zero only for W = 0, and its
    component along the top right singular vector, `sigma_1 u_1[i]`, is zero
    only where `u_1` vanishes at the largest row. Each of `iterations` steps
    is `u = W v`, `v <- W^T u` (two matvecs, v and u of unit norm) and gives
    the estimate `||W^T u|| <= sigma_1`, exact for a rank-one W after one
    step; with no step, the estimate is the largest row norm.
    """
    # The iteration runs on W / max|W|, whose sigma_1 lies in [1, sqrt(m n)],
    # and the estimate is scaled back: on W itself, the squares in the row and
    # vector norms overflowed from entries of 1e19 in float32 and underflowed
    # below 1e-19 (found by kconstraints.testing). Scaling once keeps each
    # step's norms plain, as cheap eagerly as they were before.
    top = safe_divisor(ops.amax(ops.abs(x), axis=(-2, -1), keepdims=True))
    x = x / top
    rows = ops.sum(ops.square(x), axis=-1)
    pick = ops.one_hot(ops.argmax(rows, axis=-1), x.shape[-2], dtype=x.dtype)
    # W^T u is computed as the row u^T W: XLA on a CPU multiplies a transposed
    # matrix by a vector 13 times slower (see `_backend.py`).
    v = pick[..., None, :] @ x  # rows: v^T
    for _ in range(iterations):
        u = x @ transpose(v / safe_divisor(plain_norms(v)))
        v = transpose(u / safe_divisor(plain_norms(u))) @ x
    return top * plain_norms(v)


def plain_norms(x):
    """The Frobenius norm of each matrix, unscaled: for entries known to be near 1."""
    return ops.sqrt(ops.sum(ops.square(x), axis=(-2, -1), keepdims=True))


def newton_schulz_polar(x, iterations):
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
        x = transpose(x)
    bound, _ = gram_upper(x, 2)
    y = x / safe_divisor(bound)
    for _ in range(iterations):
        y = 1.5 * y - 0.5 * (y @ (transpose(y) @ y))
    return transpose(y) if wide else y


def skew_part(owner, w):
    """`(W - W^T) / 2` of square matrices in the last two axes, in the compute dtype."""
    shape = tuple(w.shape)
    check_square(owner, shape)
    x = ops.reshape(upcast(w), shape)  # a tensor, never a tf.Variable: see as_matrices
    # fl(a - b) = -fl(b - a): the result is exactly skew, with an exactly zero diagonal.
    return 0.5 * x - 0.5 * transpose(x)
