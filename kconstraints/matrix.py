"""Matrix constraints: the weight is a matrix, constrained through its singular values or eigenvalues.

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

`Symmetric`, `Skew`, `EigenBand` and `PSD` act on square matrices in the
last two axes, batched over any leading axes.

Decompositions run in float32 for float16/bfloat16 weights and in the
weight's own dtype otherwise.
Every method compiles under `jax.jit`, TF XLA and `torch.compile`. Measured
accuracy and cost of each method, including TF XLA's slow SVD on CPUs, are
on the benchmarks page of the documentation ("Accuracy and cost of the
matrix methods", docs/benchmarks.md).
"""

from __future__ import annotations

import math

from keras import ops

from kconstraints._backend import cond
from kconstraints._base import Constraint
from kconstraints._checks import (
    check_at_least_one,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_ordered,
    check_proper_band,
)
from kconstraints._linalg import (
    as_matrices,
    compose_svd,
    finite_only,
    gram_upper,
    largest_singular_value,
    lower_estimate,
    machine_epsilon,
    newton_schulz_polar,
    power_estimate,
    recomposed_cap,
    shrink_factor,
    skew_part,
    symmetric_part,
    transpose,
)
from kconstraints._registry import register, square, stacked
from kconstraints._tensors import clamp, scalar

__all__ = [
    "PSD",
    "EigenBand",
    "LowRank",
    "Orthogonal",
    "SingularValueBand",
    "Skew",
    "SpectralNorm",
    "Symmetric",
]


@register(
    family="matrix",
    convex=False,
    exact=(
        '`method="newton_schulz"` converges in its `iterations` only for a well-conditioned '
        "`W` (25 steps left a kernel of condition number 1e4 far from orthogonal)"
    ),
    summary=(
        "WᵀW = scale² I (orthonormal columns; rows if W is wide): the polar factor, by "
        '`"svd"` or matmul-only `"newton_schulz"`'
    ),
    examples={
        "": lambda shape: Orthogonal(batched=stacked(shape)),
        "newton_schulz": lambda shape: Orthogonal(method="newton_schulz", batched=stacked(shape)),
    },
    shape=(3, 4, 4),
    uses="an L2 Lipschitz bound on Dense layers, orthogonal kernels ([guide](guides/lipschitz-network.md))",
)
class Orthogonal(Constraint):
    """Orthonormal columns (or rows) times `scale`: the projection onto scaled Stiefel matrices.

    For `W` of shape `(m, n)` with `m >= n` the set is
    `{Q : Q^T Q = scale**2 I}`; for a wide matrix, `{Q : Q Q^T = scale**2 I}`.
    `P(W) = scale * U V^T` from the thin SVD `W = U S V^T`, the orthogonal
    polar factor (Higham 2008, "Functions of Matrices", Thm 8.4). Every
    singular value of the result is `scale`, so a Dense layer with this kernel
    and `scale=1` is 1-Lipschitz, and preserves norms when
    `input_dim <= units`. The set is not convex; for a rank-deficient `W` the
    nearest point is not unique and the SVD picks one (never NaN).

    `method="svd"` (default) is exact. `method="newton_schulz"` uses matmuls
    only, `iterations` steps of the Bjorck / Newton-Schulz iteration (Bjorck
    & Bowie 1971): its error shrinks with the steps and grows with the
    condition number of `W`, and a singular `W` gives zeros in its null space.
    Measured error and cost of both: docs/benchmarks.md, "Accuracy and cost
    of the matrix methods".

    Args:
        scale: every singular value of the result (> 0).
        method: `"svd"` or `"newton_schulz"`.
        iterations: Newton-Schulz steps (`"newton_schulz"` only).
        batched: `False` reads a kernel of rank > 2 as one matrix
            `(prod(shape[:-1]), shape[-1])`; `True` as a stack of matrices
            in the last two axes (see the module docstring).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[2.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    >>> q = kconstraints.Orthogonal()(w)
    >>> keras.ops.convert_to_numpy(q).astype(float).round(3).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    """

    def __init__(self, scale=1.0, method="svd", iterations=25, batched=False):
        owner = self._owner
        self.scale = check_number(owner, "scale", scale, low=0, low_open=True)
        self.method = check_choice(owner, "method", method, ("svd", "newton_schulz"))
        self.iterations = check_int(owner, "iterations", iterations)
        self.batched = check_bool(owner, "batched", batched)

    @property
    def exact(self):
        if self.method == "svd":
            return self
        return Orthogonal(self.scale, "svd", self.iterations, self.batched)

    def project(self, w):
        x = as_matrices(self._owner, w, self.batched)
        if self.method == "svd":
            q = finite_only(_polar_factor, x)
        else:
            q = newton_schulz_polar(x, self.iterations)
        return ops.reshape(self.scale * q, w.shape)


@register(
    family="matrix",
    convex=True,
    exact=(
        '`method="scale"`, `"gram"` and `"power"` rescale the whole matrix into the set: '
        'feasible, not always the nearest point (`"power"` by an estimate, made exact by '
        "`project` and `EnforceConstraints`)"
    ),
    summary=(
        'σ₁(W) <= max_value, a Lipschitz bound: `"svd"` clips the singular values (exact); '
        '`"scale"` and matmul-only `"gram"` rescale, still guaranteed; matvec-only `"power"` '
        "rescales by an estimate, made exact by `project`/`EnforceConstraints` at each "
        "epoch's end"
    ),
    examples={
        "": lambda shape: SpectralNorm(1.0, batched=stacked(shape)),
        "scale": lambda shape: SpectralNorm(1.0, method="scale", batched=stacked(shape)),
        "gram": lambda shape: SpectralNorm(1.0, method="gram", batched=stacked(shape)),
        "power": lambda shape: SpectralNorm(1.0, method="power", batched=stacked(shape)),
    },
    shape=(3, 4, 4),
    uses="an L2 Lipschitz bound on Dense layers, orthogonal kernels ([guide](guides/lipschitz-network.md))",
)
class SpectralNorm(Constraint):
    """Bounded spectral norm: the largest singular value of the matrix is at most `max_value`.

    The set is `{W : sigma_1(W) <= max_value}`, so a Dense layer with such a
    kernel is `max_value`-Lipschitz in the Euclidean norm. `"svd"`, `"scale"`
    and `"gram"` guarantee the bound up to rounding, and return a weight
    already inside the ball bit for bit; `"power"` estimates.

    - `"svd"` (default): the projection, `P(W) = U min(S, max_value) V^T`.
    - `"scale"`: `W * min(1, max_value / sigma_1)`, sigma_1 from the singular
      values alone. Not the nearest point: it shrinks every singular value.
    - `"gram"`: matmuls only. A certified bound `b >= sigma_1` from
      `iterations` steps of Gram iteration (Delattre et al. 2023, ICML) and
      a lower estimate `l`: `b <= max_value`: unchanged; `l > max_value`:
      scaled by `max_value / b`; in between the exact sigma_1 decides.
    - `"power"`: matvecs only, the cost of Keras's `SpectralNormalization`.
      `iterations` power steps from the weight's largest row give an
      estimate `e <= sigma_1` (Miyato et al. 2018, ICLR, without the stored
      vector); `W * min(1, max_value / e)`. The norm may end slightly above
      `max_value`: `exact` is the `"svd"` twin, which `kconstraints.project`,
      `violations` and `callbacks.EnforceConstraints` (each epoch's end)
      apply. Drift, tightness, cost: docs/benchmarks.md (the matrix methods).

    Args:
        max_value: the largest allowed singular value (>= 0).
        method: `"svd"`, `"scale"`, `"gram"` or `"power"`.
        iterations: Gram or power steps (`"gram"`, `"power"` only, >= 0).
        batched: `False` reads a kernel of rank > 2 as one matrix, `True` as
            a stack of matrices each bounded on its own (module docstring).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.0], [0.0, 0.5]])
    >>> for method in ["svd", "scale", "gram", "power"]:
    ...     out = kconstraints.SpectralNorm(1.0, method=method)(w)
    ...     print(method, keras.ops.convert_to_numpy(out).astype(float).round(3).tolist())
    svd [[1.0, 0.0], [0.0, 0.5]]
    scale [[1.0, 0.0], [0.0, 0.167]]
    gram [[1.0, 0.0], [0.0, 0.167]]
    power [[1.0, 0.0], [0.0, 0.167]]
    """

    def __init__(self, max_value=1.0, method="svd", iterations=8, batched=False):
        owner = self._owner
        self.max_value = check_number(owner, "max_value", max_value, low=0)
        self.method = check_choice(owner, "method", method, ("svd", "scale", "gram", "power"))
        self.iterations = check_int(owner, "iterations", iterations, low=0)
        self.batched = check_bool(owner, "batched", batched)

    @property
    def exact(self):
        if self.method != "power":
            return self
        return SpectralNorm(self.max_value, "svd", self.iterations, self.batched)

    def project(self, w):
        x = as_matrices(self._owner, w, self.batched)
        if self.method == "power":  # matvecs only: nothing raises on a NaN or an infinity
            return ops.reshape(self._power(x), w.shape)
        method = {"svd": self._clip, "scale": self._rescale, "gram": self._gram}[self.method]
        return ops.reshape(finite_only(method, x), w.shape)

    def _clip(self, x):
        bound = self.max_value
        cap = recomposed_cap(bound, x)  # the product's rounding stays under max_value
        u, s, vt = ops.svd(x, full_matrices=False)
        clipped = compose_svd(u, ops.where(s > cap, ops.full_like(s, cap), s), vt)
        return ops.where(ops.any(s > bound, axis=-1)[..., None, None], clipped, x)

    def _rescale(self, x):
        return x * shrink_factor(largest_singular_value(x), scalar(self.max_value, x))

    def _gram(self, x):
        return x * self._gram_factor(x)

    def _power(self, x):
        # A matrix holding a NaN or an infinity comes back as it is, as from
        # `finite_only`, which is not used here: XLA fuses its masked copy of
        # the weight into every matvec, 11 times slower (see `_backend.py`).
        finite = ops.all(ops.isfinite(x), axis=(-2, -1), keepdims=True)
        factor = shrink_factor(power_estimate(x, self.iterations), scalar(self.max_value, x))
        return x * ops.where(finite, factor, ops.ones_like(factor))

    def _gram_factor(self, x):
        bound = scalar(self.max_value, x)
        upper, g = gram_upper(x, self.iterations)
        # The estimate is <= sigma_1 only up to rounding (~sqrt(k) eps): a margin keeps
        # "certified outside" from ever firing on a weight at the boundary.
        margin = 64 * math.sqrt(min(x.shape[-2:])) * machine_epsilon(x)
        outside = lower_estimate(x, g) * (1 - margin) > self.max_value
        undecided = ops.logical_and(upper > self.max_value, ops.logical_not(outside))
        exact = cond(
            ops.any(undecided),
            lambda x, bound: shrink_factor(largest_singular_value(x), bound),
            lambda x, bound: ops.ones_like(x[..., :1, :1]),
            (x, bound),
        )
        return ops.where(outside, shrink_factor(upper, bound), exact)


@register(
    family="matrix",
    convex=True,
    exact=True,
    summary="W = Wᵀ in the last two axes",
    examples=square(lambda shape: Symmetric()),
    shape=(3, 4, 4),
    uses="symmetric, skew or positive (semi)definite matrices",
)
class Symmetric(Constraint):
    """Symmetric matrices: the projection `P(W) = (W + W^T) / 2`.

    The set `{W : W = W^T}` is a linear subspace, and the symmetric part is
    its nearest point. It acts on the last two axes, which must be equal,
    batched over any leading axes.

    Returns:
        Exactly symmetric matrices.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [0.0, 3.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Symmetric()(w)).astype(float).tolist()
    [[1.0, 1.0], [1.0, 3.0]]
    """

    def project(self, w):
        return symmetric_part(self._owner, w)


@register(
    family="matrix",
    convex=True,
    exact=True,
    summary=(
        "W = Wᵀ with every eigenvalue in [min, max] (positive definite with a floor: "
        "`min_value > 0`); exact, one eigh"
    ),
    examples=square(lambda shape: EigenBand(0.1, 1.0)),
    shape=(3, 4, 4),
    uses="symmetric, skew or positive (semi)definite matrices",
)
class EigenBand(Constraint):
    """Symmetric matrices with every eigenvalue in `[min_value, max_value]`.

    The set `{W : W = W^T, min_value <= lam_i(W) <= max_value}` is convex.
    Its projection takes the symmetric part `S = (W + W^T) / 2 =
    V diag(lam) V^T` and clips the eigenvalues:
    `P(W) = V diag(clip(lam, min_value, max_value)) V^T` (the Frobenius
    nearest point: Higham 1988, "Computing a nearest symmetric positive
    semidefinite matrix", for the one-sided case; the band follows the same
    way, as the Frobenius norm is unitarily invariant). `PSD()` is
    `EigenBand(min_value=0.0)`; `EigenBand(min_value=eps)` keeps a matrix
    positive definite with its smallest eigenvalue at least `eps`. It acts
    on the last two axes, which must be equal, batched over any leading
    axes. A symmetric weight already in the band is returned unchanged.

    Args:
        min_value: the smallest allowed eigenvalue; `None` for no floor.
        max_value: the largest allowed eigenvalue; `None` for no cap.
            At least one must be given, and `min_value <= max_value`.

    Returns:
        Exactly symmetric matrices.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues -1 and 3
    >>> out = kconstraints.EigenBand(0.5, 2.0)(w)
    >>> keras.ops.convert_to_numpy(out).astype(float).round(3).tolist()
    [[1.25, 0.75], [0.75, 1.25]]
    """

    def __init__(self, min_value=None, max_value=None):
        owner = self._owner
        check_at_least_one(owner, min_value=min_value, max_value=max_value)
        self.min_value = None if min_value is None else check_number(owner, "min_value", min_value)
        self.max_value = None if max_value is None else check_number(owner, "max_value", max_value)
        if min_value is not None and max_value is not None:
            check_ordered(owner, "min_value", self.min_value, "max_value", self.max_value)

    def project(self, w):
        return finite_only(self._clip, symmetric_part(self._owner, w))

    def _clip(self, s):
        return _clip_eigenvalues(s, self.min_value, self.max_value)


@register(
    family="matrix",
    convex=True,
    exact=True,
    summary="W = Wᵀ with every eigenvalue >= 0",
    examples=square(lambda shape: PSD()),
    shape=(3, 4, 4),
    uses="symmetric, skew or positive (semi)definite matrices",
)
class PSD(EigenBand):
    """Positive semidefinite matrices: the symmetric part, negative eigenvalues clipped to 0.

    The set is the cone `{W : W = W^T, W >= 0}` (all eigenvalues >= 0), for
    example a covariance or a metric learned with `add_weight`: the band
    `[0, inf)` of `EigenBand`, under its own name and with no arguments. The
    projection (Higham 1988, "Computing a nearest symmetric positive
    semidefinite matrix") takes the symmetric part `S = (W + W^T) / 2 =
    V diag(lam) V^T` and returns `V diag(max(lam, 0)) V^T`. It acts on the
    last two axes, which must be equal, batched over any leading axes. A
    symmetric weight whose eigenvalues are all >= 0 is returned unchanged.

    Returns:
        Exactly symmetric matrices.

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [2.0, 1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.PSD()(w)).astype(float).round(3).tolist()
    [[1.5, 1.5], [1.5, 1.5]]
    """

    def __init__(self):
        super().__init__(min_value=0.0)


@register(
    family="matrix",
    convex=False,
    exact=True,
    summary="rank(W) <= rank: the truncated SVD",
    examples=lambda shape: LowRank(2 if stacked(shape) else 8, batched=stacked(shape)),
    shape=(3, 4, 4),
    uses="low-rank or well-conditioned matrices",
)
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

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.0], [0.0, 1.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.LowRank(1)(w)).astype(float).round(3).tolist()
    [[3.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, rank=1, batched=False):
        self.rank = check_int(self._owner, "rank", rank)
        self.batched = check_bool(self._owner, "batched", batched)

    def project(self, w):
        x = as_matrices(self._owner, w, self.batched)
        if self.rank >= min(x.shape[-2:]):
            return ops.reshape(x, w.shape)
        return ops.reshape(finite_only(self._truncate, x), w.shape)

    def _truncate(self, x):
        u, s, vt = ops.svd(x, full_matrices=False)
        r = self.rank
        return compose_svd(u[..., :r], s[..., :r], vt[..., :r, :])


def _polar_factor(x):
    """`U V^T` from the thin SVD of each matrix."""
    u, _, vt = ops.svd(x, full_matrices=False)
    return u @ vt


def _clip_eigenvalues(s, low, high):
    """Symmetric `s` with its eigenvalues clipped into [low, high] (None: no bound).

    A matrix whose eigenvalues are all inside comes back as it is, bit for bit.
    """
    lam, v = ops.eigh(s)
    band = clamp(lam, low, high)
    clipped = compose_svd(v, band, transpose(v))
    clipped = 0.5 * clipped + 0.5 * transpose(clipped)
    return ops.where(ops.any(band != lam, axis=-1)[..., None, None], clipped, s)


@register(
    family="matrix",
    convex=False,
    exact=True,
    summary="every singular value in [min, max] (almost orthogonal); exact, one SVD",
    examples=lambda shape: SingularValueBand(0.5, 1.0, batched=stacked(shape)),
    shape=(3, 4, 4),
    uses="low-rank or well-conditioned matrices",
)
class SingularValueBand(Constraint):
    """Singular values in a band: each clipped into `[min_value, max_value]`.

    The set is `{W : min_value <= s_i(W) <= max_value for all i}`, the
    `min(m, n)` singular values of the `(m, n)` matrix, and
    `P(W) = U clip(S, min_value, max_value) V^T` from the thin SVD
    `W = U S V^T`, the Frobenius nearest point (von Neumann's trace
    inequality; Higham 2008, "Functions of Matrices", ch. 8). With
    `min_value = 0` it is `SpectralNorm(max_value)`, a convex set; with
    `min_value > 0` the set is not convex (it is an "almost orthogonal" band
    around the scaled Stiefel matrices, geotorch's `almost_orthogonal`), and
    a rank-deficient `W` has no unique nearest point: its zero singular
    values rise to `min_value` along the null vectors the SVD picks. A
    weight already in the band is returned unchanged, bit for bit. The
    matrix of a kernel of rank > 2 is read as in `SpectralNorm`.

    Args:
        min_value: the smallest allowed singular value (>= 0).
        max_value: the largest allowed singular value (>= `min_value`);
            `None` for no cap (then `min_value` must be > 0).
        batched: `False` reads a kernel of rank > 2 as one matrix, `True` as
            a stack of matrices each constrained on its own (module docstring).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 0.0], [0.0, 0.1], [0.0, 0.0]])
    >>> out = kconstraints.SingularValueBand(0.5, 2.0)(w)
    >>> keras.ops.convert_to_numpy(out).astype(float).round(3).tolist()
    [[2.0, 0.0], [0.0, 0.5], [0.0, 0.0]]
    """

    def __init__(self, min_value=0.0, max_value=1.0, batched=False):
        owner = self._owner
        self.min_value = check_number(owner, "min_value", min_value, low=0)
        check_proper_band(owner, min_value, max_value)
        self.max_value = None
        if max_value is not None:
            self.max_value = check_number(owner, "max_value", max_value, low=0)
            check_ordered(owner, "min_value", self.min_value, "max_value", self.max_value)
        self.batched = check_bool(owner, "batched", batched)

    def project(self, w):
        x = as_matrices(self._owner, w, self.batched)
        return ops.reshape(finite_only(self._clip, x), w.shape)

    def _clip(self, x):
        u, s, vt = ops.svd(x, full_matrices=False)
        band = clamp(s, self.min_value or None, self.max_value)
        high = self.max_value
        if high is not None:  # the product's rounding stays under max_value (as SpectralNorm)
            high = max(recomposed_cap(high, x), self.min_value)
        clipped = compose_svd(u, clamp(s, self.min_value or None, high), vt)
        return ops.where(ops.any(band != s, axis=-1)[..., None, None], clipped, x)


@register(
    family="matrix",
    convex=True,
    exact=True,
    summary="Wᵀ = -W in the last two axes",
    examples=square(lambda shape: Skew()),
    shape=(3, 4, 4),
    uses="symmetric, skew or positive (semi)definite matrices",
)
class Skew(Constraint):
    """Skew-symmetric matrices: the projection `P(W) = (W - W^T) / 2`.

    The set `{W : W^T = -W}` is a linear subspace (the Lie algebra of the
    rotations: `expm(W)` of a skew `W` is orthogonal, as in antisymmetric
    recurrent networks and geotorch's `skew`), and the skew part is its
    nearest point. It acts on the last two axes, which must be equal,
    batched over any leading axes.

    Returns:
        Exactly skew-symmetric matrices (the diagonal exactly 0).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[1.0, 2.0], [0.0, 3.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Skew()(w)).astype(float).tolist()
    [[0.0, 1.0], [-1.0, 0.0]]
    """

    def project(self, w):
        return skew_part(self._owner, w)
