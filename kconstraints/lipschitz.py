"""Certified Lipschitz layers: operator norms of convolutions, `ConvSpectralNorm` and `AOL`.

A Conv kernel `(*spatial, in_channels, out_channels)` reshaped to a matrix
(what `SpectralNorm` bounds) understates the norm of the convolution by up
to `sqrt(prod(spatial))`. Here the bound is on the convolution operator
itself, for every input size.

Why one number bounds every convolution with the kernel. With zero padding,
the convolution of an input of any size is a block of the convolution on
the infinite grid `Z^d` (the input extended by zeros, some outputs kept):
"same" and "valid" padding and any stride only keep fewer outputs, so their
norm is at most the infinite one. That operator is block-Toeplitz with the
matrix symbol `K(w) = sum_t K[t] exp(-i w.t)`, and its L2 norm is
`S = sup_w sigma_1(K(w))` (Boettcher & Silbermann, "Analysis of Toeplitz
Operators", 2006), the limit of the norm as the input grows. A
`Conv*Transpose` layer with the same kernel is the adjoint of such a
strided convolution (its kernel `(*spatial, out, in)` read as a Conv
kernel), cropped, so it has the same bound: pass its kernel as it is.

How `S` is certified. As in Delattre, Barthelemy & Allauzen 2024 ("Spectral
norm of convolutional layers with circular and zero paddings", arXiv
2402.00240), the symbol is sampled on a grid of frequencies (`N_i` per
axis, no FFT: a small DFT by matmuls), each `sigma_1(K(w_g))` is bounded
from above by Gram iteration, and a factor bridges the grid (the circular
convolution of size N) to the zero-padded norm; the factor used here is
derived as follows, from Bernstein's inequality. With `u, v` the top
singular pair at the maximizer `w*`, `f(w) = Re(e^{i w.c} u^* K(w) v)`, `c`
the kernel's center, is a bounded function of exponential type
`s = (pi / 2) sum_i (k_i - 1) / N_i` along the segment from `w*` to its
nearest grid point, maximal (so flat) at `w*`; Bernstein's inequality
(`|f''| <= s^2 S`) gives `max_g sigma_1(K(w_g)) >= S (1 - s^2 / 2)`. So
`S <= max_g bound_g / (1 - s^2 / 2)`; `grid_tolerance` sets the grid so
that this factor is at most `1 + grid_tolerance`. (The grid and the factor
are defined once, in `_grid.py`, for this module and `certify`.)

Rounding. The bound is computed in float32 (float64 for float64 kernels)
and multiplied by `1 + n * 2**-23`, `n` the length of the longest sum
(taps + in + out channels): the worst-case relative error of such sums
(Higham 2002, "Accuracy and Stability of Numerical Algorithms", 3.1);
later Gram steps enter through a 2**t-th root, which shrinks their error.
"""

from __future__ import annotations

import math

from keras import ops

from kconstraints._base import Constraint
from kconstraints._checks import check_conv_kernel, check_int, check_number, check_rank
from kconstraints._constants import SUM_MARGIN_PER_TERM
from kconstraints._grid import conv_grid
from kconstraints._linalg import gram_upper
from kconstraints._registry import register
from kconstraints._tensors import safe_divisor, scalar, upcast

__all__ = ["AOL", "ConvSpectralNorm", "conv_norm_bound", "dense_norm_bound"]


def _rounding_margin(longest_sum):
    """`1 + n * SUM_MARGIN_PER_TERM` for a longest sum of `n` terms (module docstring)."""
    return 1 + longest_sum * SUM_MARGIN_PER_TERM


def _cos_sin(angle):
    """cos and sin of angles in [0, 2 pi), in the angles' own dtype.

    Keras's `ops.cos` and `ops.sin` return float32 for a float64 tensor on
    JAX, which would leave float64 kernels with a float32 symbol. Where they
    change the dtype: Taylor series of degree 34 about pi, by Horner's rule
    (only `*` and `+`, which keep the dtype): the remainder is below 1e-17 on
    [-pi, pi].
    """
    cos, sin = ops.cos(angle), ops.sin(angle)
    if cos.dtype == angle.dtype and sin.dtype == angle.dtype:
        return cos, sin
    x = angle - scalar(math.pi, angle)  # cos(a) = -cos(x), sin(a) = -sin(x)
    x2 = x * x
    cos, sin = ops.zeros_like(x), ops.zeros_like(x)
    for n in range(17, -1, -1):
        cos = cos * x2 + (-1) ** n / math.factorial(2 * n)
        sin = sin * x2 + (-1) ** n / math.factorial(2 * n + 1)
    return -cos, -(sin * x)


def _dft_axis(re, im, axis, size, half):
    """The real and imaginary parts of the DFT along `axis` at `size` frequencies.

    `half` keeps frequencies 0..size // 2 only (the others are conjugates of these,
    with the same singular values, when this is the last transformed axis).
    """
    taps = re.shape[axis]
    count = size // 2 + 1 if half else size
    # Angles 2 pi (j t mod N) / N: the integer product is exact, so cos and sin are
    # accurate to a rounding whatever the grid.
    j = ops.arange(count, dtype="int32")[:, None]
    t = ops.arange(taps, dtype="int32")[None, :]
    phase = ops.cast(ops.mod(j * t, size), re.dtype) * scalar(2 * math.pi / size, re)
    cos, sin = _cos_sin(phase)
    cos, sin = ops.transpose(cos), ops.transpose(sin)  # (taps, count)
    re, im = ops.moveaxis(re, axis, -1), ops.moveaxis(im, axis, -1)
    # 2-d products only: a batched matmul here crashed TensorFlow on CPU (_backend.py).
    rest = tuple(re.shape[:-1])
    re, im = ops.reshape(re, (-1, taps)), ops.reshape(im, (-1, taps))
    # (re + i im)(cos - i sin): the symbol uses exp(-i w t).
    new_re = ops.reshape(re @ cos + im @ sin, (*rest, count))
    new_im = ops.reshape(im @ cos - re @ sin, (*rest, count))
    return ops.moveaxis(new_re, -1, axis), ops.moveaxis(new_im, -1, axis)


def _symbol(x, sizes):
    """The symbol K(w) on the grid, as real and imaginary `(points, in, out)` stacks."""
    spatial = len(x.shape) - 2
    re, im = x, ops.zeros_like(x)
    last = None
    for i in range(spatial):
        if sizes[i] > 1:
            last = i
    for axis in range(spatial):
        if sizes[axis] > 1:
            re, im = _dft_axis(re, im, axis, sizes[axis], half=axis == last)
    shape = (-1, x.shape[-2], x.shape[-1])
    return ops.reshape(re, shape), ops.reshape(im, shape)


def _frobenius(re, im):
    return ops.sqrt(ops.sum(re * re, axis=(-2, -1)) + ops.sum(im * im, axis=(-2, -1)))


def _complex_gram_upper(re, im, iterations):
    """Certified upper bounds on sigma_1 of a stack of complex matrices, by Gram iteration.

    The complex version of `_linalg.gram_upper`: H = M M^* (on the smaller side)
    squared `iterations` times, rescaled to unit Frobenius norm before each
    squaring, gives sigma_1(M)^(2^(t+1)) = lambda_max(H_t) <= ||H_t||_F.
    H = P + iQ is Hermitian (P symmetric, Q antisymmetric), so
    H^2 = (PP - QQ) + i (PQ - (PQ)^T).
    """
    fro = _frobenius(re, im)
    scale = safe_divisor(fro)[:, None, None]
    a, b = re / scale, im / scale
    if a.shape[-2] > a.shape[-1]:  # the smaller side: M^* M instead of M M^*
        a, b = ops.swapaxes(a, -1, -2), -ops.swapaxes(b, -1, -2)
    at, bt = ops.swapaxes(a, -1, -2), ops.swapaxes(b, -1, -2)
    p = a @ at + b @ bt
    q = b @ at - a @ bt
    if min(a.shape[-2:]) == 1:
        # A row or column (one input or output channel): sigma_1 = the Frobenius
        # norm, exact without squaring; squaring 1 x 1 matrices makes Inductor
        # fuse a chain that doubles per step (see `_linalg.gram_upper`): a
        # compiled torch train step did not finish compiling in 12 minutes.
        iterations = 0
    log_bound = ops.zeros_like(fro)
    for i in range(iterations):
        f = safe_divisor(_frobenius(p, q))
        log_bound = log_bound + 2.0**-i * ops.log(f)
        p, q = p / f[:, None, None], q / f[:, None, None]
        pq = p @ q
        p, q = p @ p - q @ q, pq - ops.swapaxes(pq, -1, -2)
    log_bound = log_bound + 2.0**-iterations * ops.log(safe_divisor(_frobenius(p, q)))
    return fro * ops.exp(0.5 * log_bound)


def _certificate_input(kernel):
    """`kernel` as a tensor cut from autodiff: a bound is a number to read, not a loss.

    A torch kernel (a variable's value) requires grad; a bound computed from
    it would too, and `float()` of it warns. Cut at the input, no graph is
    recorded; on JAX and TensorFlow the value is the same.
    """
    return ops.stop_gradient(ops.convert_to_tensor(kernel))


def conv_norm_bound(kernel, iterations=6, grid_tolerance=0.02):
    """A certified upper bound on the L2 operator norm of the convolution with `kernel`.

    Valid for every input size, zero padding ("same" or "valid"), any
    stride, dilation 1; and for `Conv*Transpose` layers, whose kernel
    `(*spatial, out, in)` is passed as it is (the layer is the adjoint of
    a strided convolution with that kernel, and has the same norm). How
    it is certified, and its float rounding margin: the module docstring.
    The bound exceeds the norm at large inputs by at most the factor
    `(1 + grid_tolerance) * min(in, out) ** (1 / 2**(iterations + 2))`,
    and by much less for most kernels (docs/benchmarks.md).

    Args:
        kernel: a Conv1D/2D/3D kernel `(*spatial, in_channels, out_channels)`
            (a Dense kernel, with no spatial axis, gives its spectral norm).
        iterations: Gram iteration steps per frequency (>= 0).
        grid_tolerance: the frequency grid's share of the slack (> 0); a
            smaller one samples more frequencies.

    Returns:
        A 0-d tensor: float32, or float64 for a float64 kernel; no gradient
        flows through it (on torch it does not require grad).

    Example:

    >>> import numpy as np, kconstraints as kc
    >>> k = np.ones((3, 1, 1), "float32")  # a 3-tap moving sum: norm 3 at large inputs
    >>> b = float(kc.conv_norm_bound(k))
    >>> 3.0 <= b <= 3.0 * 1.02
    True
    """
    owner = "conv_norm_bound"
    iterations = check_int(owner, "iterations", iterations, low=0)
    grid_tolerance = check_number(owner, "grid_tolerance", grid_tolerance, low=0, low_open=True)
    return _conv_norm_bound(owner, _certificate_input(kernel), iterations, grid_tolerance)


def _conv_norm_bound(owner, kernel, iterations, grid_tolerance):
    x = ops.convert_to_tensor(kernel)
    shape = tuple(x.shape)
    check_conv_kernel(owner, shape)
    x = ops.reshape(upcast(x), shape)  # a tensor, never a tf.Variable (see _backend.py)
    sizes, factor = conv_grid(shape[:-2], grid_tolerance)
    re, im = _symbol(x, sizes)
    per_point = _complex_gram_upper(re, im, iterations)
    margin = _rounding_margin(math.prod(shape[:-2]) + shape[-2] + shape[-1])
    # `ops.amax`, not `ops.max`, which breaks torch.compile graphs (see _backend.py).
    return ops.amax(per_point, axis=0) * scalar(factor * margin, per_point)


def dense_norm_bound(kernel, iterations=10):
    """A certified upper bound on the spectral norm of a Dense kernel `(input_dim, units)`.

    Gram iteration (`SpectralNorm(method="gram")`'s bound, Delattre et al.
    2023), times the rounding margin of `conv_norm_bound`. It exceeds the
    exact norm by at most the factor `min(shape) ** (1 / 2**(iterations + 2))`.
    A kernel of rank > 2 is read as the matrix `(prod(shape[:-1]), shape[-1])`.

    Args:
        kernel: a matrix (rank >= 2).
        iterations: Gram iteration steps (>= 0).

    Returns:
        A 0-d tensor: float32, or float64 for a float64 kernel; no gradient
        flows through it (on torch it does not require grad).

    Example:

    >>> import numpy as np, kconstraints as kc
    >>> round(float(kc.dense_norm_bound(np.diag([3.0, 1.0]).astype("float32"))), 4)
    3.0
    """
    owner = "dense_norm_bound"
    iterations = check_int(owner, "iterations", iterations, low=0)
    x = _certificate_input(kernel)
    check_rank(owner, x.shape, "a matrix (rank >= 2)", low=2)
    x = ops.reshape(upcast(x), (-1, x.shape[-1]))
    upper, _ = gram_upper(x, iterations)
    return ops.reshape(upper, ()) * scalar(_rounding_margin(x.shape[0] + x.shape[1]), upper)


@register(
    family="matrix",
    convex=True,
    exact="rescales the kernel by a certified bound of its operator norm",
    summary=(
        "Conv1D/2D/3D kernels: the convolution's operator norm <= max_value, certified for "
        "every input size, padding and stride (not the reshaped matrix's): rescaled by a "
        "Gram-iteration bound"
    ),
    examples=lambda shape: ConvSpectralNorm(1.0),
    shape=(3, 3, 2, 4),
    uses="a certified Lipschitz bound on convolutions ([guide](lipschitz.md))",
)
class ConvSpectralNorm(Constraint):
    """Convolution operator norm at most `max_value`, certified for every input size.

    The set is the Conv kernels whose convolution, zero-padded ("same" or
    "valid"), any stride, dilation 1, any input size, has L2 operator norm
    `<= max_value`: so are the `Conv*Transpose` layers with that kernel. With
    `b = conv_norm_bound(W)`, `P(W) = W * min(1, max_value / b)`: a kernel
    whose bound is inside comes back bit for bit; the others are rescaled
    onto the bound. Not the nearest point (it shrinks every singular value).
    Unlike `SpectralNorm`, which bounds the reshaped `(taps * in, out)`
    matrix and so may allow a norm `sqrt(taps)` times larger, this bounds
    the operator (module docstring: the theorem, the grid, the rounding).
    A Dense kernel (rank 2, no spatial axis) gets its spectral norm bounded.
    Slack after the rescaling and cost: docs/benchmarks.md.

    Args:
        max_value: the largest allowed operator norm (>= 0).
        iterations: Gram iteration steps per frequency (>= 0).
        grid_tolerance: the frequency grid's share of the slack (> 0).

    Example:

    >>> import numpy as np, keras, kconstraints as kc
    >>> k = np.zeros((3, 3, 1, 1), "float32"); k[:, :, 0, 0] = 1.0  # a 3x3 box sum: norm 9
    >>> out = kc.ConvSpectralNorm(1.0)(keras.ops.convert_to_tensor(k))
    >>> round(float(kc.conv_norm_bound(out)), 4)
    1.0
    """

    def __init__(self, max_value=1.0, iterations=6, grid_tolerance=0.02):
        owner = self._owner
        self.max_value = check_number(owner, "max_value", max_value, low=0)
        self.iterations = check_int(owner, "iterations", iterations, low=0)
        self.grid_tolerance = check_number(
            owner, "grid_tolerance", grid_tolerance, low=0, low_open=True
        )

    def project(self, w):
        check_conv_kernel(self._owner, tuple(w.shape))
        x = ops.reshape(upcast(w), tuple(w.shape))
        bound = _conv_norm_bound(self._owner, x, self.iterations, self.grid_tolerance)
        limit = scalar(self.max_value, bound)
        factor = ops.where(bound > limit, limit / safe_divisor(bound), ops.ones_like(bound))
        return x * factor


@register(
    family="matrix",
    convex=False,
    exact="a rescaling per input channel, not a projection",
    summary=(
        "Dense or Conv kernel rescaled per input channel so the layer is certified "
        "1-Lipschitz (Prach & Lampert 2022); not a projection"
    ),
    examples=lambda shape: AOL(),
    uses="a certified Lipschitz bound on convolutions ([guide](lipschitz.md))",
)
class AOL(Constraint):
    """Almost-orthogonal rescaling: a Dense or Conv layer certified 1-Lipschitz, no SVD.

    Dense kernel `W` `(input_dim, units)` (the layer is `x -> x W`): with
    `P = W W^T`, each input row is scaled, `W <- diag(d) W`,
    `d_j = (sum_i |P_ij|)^(-1/2)`. Conv kernel `(*spatial, in, out)`: `P`
    is the autocorrelation of the kernel, `P[tau] = sum_t K[t] K[t+tau]^T`
    (`in x in` for each tap offset `tau`), and `d_j` sums `|P[tau]_ij|`
    over all offsets and channels `i`. By the Schur test the layer then has
    L2 norm `<= 1`: for the convolution zero-padded, any input size and
    stride, and its `Conv*Transpose` (Prach & Lampert 2022, "Almost-Orthogonal
    Layers for Efficient General-Purpose Lipschitz Networks", ECCV, Thm 1).
    An input row or channel of zeros is left as it is.

    Not a projection: it rescales every kernel, inside the unit ball or not
    (a kernel with orthonormal rows is unchanged), and applied twice it may
    move again. It is meant as the constraint of a layer trained with it.
    A Dense kernel is a matrix (rank 2); ranks 3 to 5 are Conv kernels.

    Example:

    >>> import keras, kconstraints as kc
    >>> w = keras.ops.convert_to_tensor([[1.0, 1.0], [0.0, 2.0]])
    >>> out = kc.AOL()(w)  # the row sums of |W W^T| are 4 and 6
    >>> keras.ops.convert_to_numpy(out).astype(float).round(3).tolist()
    [[0.5, 0.5], [0.0, 0.816]]
    """

    def project(self, w):
        shape = tuple(w.shape)
        check_conv_kernel(self._owner, shape)
        x = ops.reshape(upcast(w), shape)
        # AOL(c W) = AOL(W): on W / max|W| the products of |W^T W| neither
        # underflow (float32 kernels of 1e-21 lost digits on torch) nor overflow.
        x = x / safe_divisor(ops.amax(ops.abs(x)))
        sums = _dense_row_sums(x) if len(shape) == 2 else _conv_row_sums(x)
        d = 1 / ops.sqrt(safe_divisor(sums))
        return x * d[:, None]


def _dense_row_sums(x):
    """`sum_i |W W^T|_ij` for each input row j."""
    return ops.sum(ops.abs(x @ ops.transpose(x)), axis=0)


def _conv_row_sums(x):
    """`sum_tau sum_i |P[tau]_ij|` for each input channel j, P the kernel's autocorrelation.

    One convolution computes every offset: the kernel as a batch of `in`
    images (one per input channel i, `out` channels each), zero-padded by
    `k - 1`, convolved ("valid") with the kernel read as `(*spatial, out, in)`
    gives `sum_u sum_o K[u + p]_io K[u]_jo = P[-p]_ij` at each offset `p`.
    """
    spatial = len(x.shape) - 2
    images = ops.moveaxis(x, -2, 0)  # (in, *spatial, out)
    pad = [(0, 0)] + [(k - 1, k - 1) for k in x.shape[:-2]] + [(0, 0)]
    images = ops.pad(images, pad)
    filters = ops.swapaxes(x, -1, -2)  # (*spatial, out, in)
    p = ops.conv(images, filters, padding="valid")  # (in, *(2k - 1), in)
    return ops.sum(ops.abs(p), axis=tuple(range(spatial + 1)))
