"""The registry: one `Case` per constraint, with the alternatives it is timed against.

A new constraint joins every benchmark (projection cost, train-step
overhead, the comparisons) through one entry in `CASES`. A case builds its
constraint for a kernel shape: a Dense kernel `(input_dim, units)` or a
Conv2D kernel `(rows, cols, in_channels, filters)`, so that norms are taken
per unit or per filter, as users write them. `tests/test_benchmarks.py`
fails when a constraint exported by `kconstraints` has no entry here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

import kconstraints as kc

BACKENDS = ("jax", "tensorflow", "torch")
# How a case scales: elementwise (read once, write once), reduction (one
# norm or mean per slice), sort (a sort per slice), isotonic (pairwise work
# per slice), matrix (square kernels, n x n: decompositions and matrix
# products), composite (several projections).
FAMILIES = ("elementwise", "reduction", "sort", "isotonic", "matrix", "composite")


@dataclasses.dataclass(frozen=True)
class Twin:
    """Another library's way to get the same set, timed next to the case.

    Exactly one of `make` (shape -> callable on a tensor; usable as a Keras
    constraint when `keras_constraint`), `wrapper` (Keras layer -> wrapped
    layer, train step only) or `parametrize` (torch `nn.Linear` -> the same
    module parametrized in place, torch train step only) is set.
    """

    library: str
    name: str
    backends: tuple = BACKENDS
    make: Callable | None = None
    keras_constraint: bool = False
    wrapper: Callable | None = None
    parametrize: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    """One constraint: `make(kernel_shape)` returns it, or None where it does not apply."""

    name: str
    family: str
    make: Callable
    twins: tuple = ()
    # Parity classes are held to their Keras twin (within 5%).
    parity: bool = False
    # Largest weight size timed (a cost that grows faster than the size).
    max_size: int | None = None
    # Tighter limits for some backends on a CPU (a GPU run ignores them): {backend: size}.
    backend_max_size: dict = dataclasses.field(default_factory=dict)

    def cpu_limit(self, backend, gpu=False):
        """The tighter limit of `backend` on a CPU (None on a GPU, or where it has none)."""
        return None if gpu else self.backend_max_size.get(backend)

    def limit(self, backend, gpu=False):
        """The largest weight size timed on `backend` (None: no limit)."""
        sizes = (self.max_size, self.cpu_limit(backend, gpu))
        return min([s for s in sizes if s], default=None)


def fan_in(shape):
    """The axes of one unit's (Dense) or one filter's (Conv2D) incoming weights."""
    return list(range(len(shape) - 1))


def keras_twin(cls, *args, **kwargs):
    """A `keras.constraints` class built like the case, `axis` set per kernel."""
    return Twin(
        library="keras",
        name=f"keras.constraints.{cls.__name__}",
        make=lambda shape: cls(*args, **kwargs, axis=fan_in(shape)),
        keras_constraint=True,
    )


def optax_twin(projection, per_unit=False, **kwargs):
    """An `optax.projections` function; `per_unit` vmaps it over the units (columns)."""

    def make(shape):
        import jax
        from optax import projections

        fn = getattr(projections, projection)

        def project(w):
            return fn(w, **kwargs)

        if not per_unit:
            return project
        # optax projects a whole pytree onto one set; mapping over the last
        # axis gives the per-unit sets of the kconstraints case.
        flat = jax.vmap(project, in_axes=-1, out_axes=-1)
        return lambda w: flat(w.reshape(-1, shape[-1])).reshape(shape)

    suffix = " (vmap over units)" if per_unit else ""
    return Twin("optax", f"optax.projections.{projection}{suffix}", ("jax",), make)


def sort_twin(cls, *args):
    """`cls` as it was before Michelot passes: each slice moved to a row, one sort per row.

    The whole projection stays in the rows' layout, as it did: computing only
    the threshold there and shifting the weight in its own layout is not the
    old method, and XLA on a CPU fuses that shift with the threshold's
    maximum into a far slower kernel (6.8 s against 1.75 s at 3162 x 3162,
    JAX).
    """

    def make(shape):
        from kconstraints._tensors import slices_as_rows
        from kconstraints.simplex import ROUNDING, simplex_threshold

        def project(self, w):
            x, axes, n = self._slices(w)
            rows, restore = slices_as_rows(x, axes)
            if cls.__name__ == "Simplex":  # min_value 0, no cap: the plain simplex
                shifted = rows - simplex_threshold(rows, self.total)
                return restore(ops.where(shifted < 0, ops.zeros_like(shifted), shifted))
            magnitude = ops.abs(rows)
            theta = simplex_threshold(magnitude, self.radius)
            shrunk = ops.where(magnitude > theta, ops.sign(rows) * (magnitude - theta), 0 * rows)
            eps = ROUNDING[keras.backend.standardize_dtype(rows.dtype)]
            slack = self.radius * eps * (2 + math.log2(n))
            inside = ops.sum(magnitude, axis=-1, keepdims=True) <= self.radius + slack
            return restore(ops.where(ops.logical_or(theta <= 0, inside), rows, shrunk))

        return type(cls.__name__, (cls,), {"project": project})(*args, axis=fan_in(shape))

    return Twin("kconstraints-sort", f"kconstraints.{cls.__name__} (one sort per slice)", make=make)


def power_before(max_value=1.0):
    """`SpectralNorm(method="power")` as it was before its matvecs were rewritten.

    `W^T u` as a transposed matrix times a vector, and the kernel behind
    `finite_only`'s masked copy: the two things XLA on a CPU ran slowly
    (see `kconstraints/_backend.py`). Kept to time the change side by side.
    """
    from kconstraints import _linalg as la
    from kconstraints._tensors import safe_divisor, scalar

    def estimate(x, iterations):
        rows = ops.sum(ops.square(x), axis=-1)
        pick = ops.one_hot(ops.argmax(rows, axis=-1), x.shape[-2], dtype=x.dtype)
        v = la.transpose(x) @ pick[..., :, None]
        value = la.frobenius(v)
        for _ in range(iterations):
            u = x @ (v / safe_divisor(la.frobenius(v)))
            v = la.transpose(x) @ u
            value = la.frobenius(v) / safe_divisor(la.frobenius(u))
        return value

    def project(self, w):
        x = la.as_matrices(self._owner, w, self.batched)

        def rescale(x):
            bound = scalar(self.max_value, x)
            return x * la.shrink_factor(estimate(x, self.iterations), bound)

        return ops.reshape(la.finite_only(rescale, x), w.shape)

    cls = type("SpectralNorm", (kc.SpectralNorm,), {"project": project})
    return cls(max_value, method="power")


def keras_guide_center_around(ref_value):
    """The custom constraint that the Keras constraints guide writes by hand."""

    def make(shape):
        return lambda w: w - ops.mean(w) + ref_value

    return Twin("keras-guide", "w - mean(w) + ref_value (Keras guide)", make=make)


def fan_in_normal(shape):
    """A fixed normal vector of one unit's (or filter's) flattened incoming weights."""
    size = int(np.prod(shape[:-1]))
    return np.random.default_rng(1).normal(size=size).astype("float32")


def optax_plane_twin(projection, offset):
    """optax's hyperplane or half-space projection vmapped over the units."""

    def make(shape):
        import jax
        from optax import projections

        a = fan_in_normal(shape)
        fn = jax.vmap(lambda w: getattr(projections, projection)(w, a, offset), -1, -1)
        return lambda w: fn(w.reshape(-1, shape[-1])).reshape(shape)

    return Twin("optax", f"optax.projections.{projection} (vmap over units)", ("jax",), make)


def bayar_system():
    """Bayar & Stamm's (2016) constraint on a 3 x 3 kernel: centre -1, the rest summing to 1."""
    centre = np.zeros((3, 3))
    centre[1, 1] = 1.0
    return np.stack([centre, 1.0 - centre]), [-1.0, 1.0]


def affine_system(shape):
    """Bayar's system on each 3 x 3 tap kernel of a Conv2D kernel; else 4 rows per unit."""
    if len(shape) == 4 and shape[:2] == (3, 3):
        return kc.AffineSet(*bayar_system(), axis=[0, 1])
    size = int(np.prod(shape[:-1]))
    first, last = np.zeros(size), np.zeros(size)
    first[0], last[-1] = 1.0, 1.0
    rows = np.stack([np.ones(size), first, last, np.linspace(-1.0, 1.0, size)])
    return kc.AffineSet(rows, [1.0, 0.0, 0.0, 0.5], axis=fan_in(shape))


def keep_at_least(magnitude, threshold, w):
    return ops.where(magnitude >= threshold, w, ops.zeros_like(w))


def plain_sort_top_k(density):
    """TopK's set the plain way: one full sort, keep what reaches the k-th magnitude (no tie rule)."""

    def make(shape):
        n = int(np.prod(shape))
        k = kc.TopK(density=density).count(shape)

        def project(w):
            magnitude = ops.abs(w)
            return keep_at_least(magnitude, ops.sort(ops.reshape(magnitude, (-1,)))[n - k], w)

        return project

    return Twin("plain-sort", "sort |w|, keep >= the k-th largest", make=make)


def two_four_axis(shape):
    """The first input axis whose length is a multiple of 4 (Conv2D: the input channels), else None."""
    return next((a for a in fan_in(shape) if shape[a] % 4 == 0), None)


def two_four(shape):
    """NM(2, 4) along `two_four_axis`; a kernel with no such axis (the 1e7 kernel
    (3162, 3162), the tests' small ones) keeps 2 of each whole column instead."""
    axis = two_four_axis(shape)
    return kc.NM(2, 4, axis=axis) if axis is not None else kc.NM(2, shape[0], axis=0)


def plain_sort_n_m():
    """NM's set the plain way: sort each group, keep what reaches its n-th magnitude (no tie rule)."""

    def make(shape):
        c = two_four(shape)
        perm = [a for a in range(len(shape)) if a != c.axis] + [c.axis]
        moved = [shape[a] for a in perm]
        inverse = [perm.index(a) for a in range(len(perm))]

        def project(w):
            groups = ops.reshape(ops.transpose(w, perm), (-1, c.m))
            magnitude = ops.abs(groups)
            nth = ops.sort(magnitude)[:, c.m - c.n : c.m - c.n + 1]
            kept = keep_at_least(magnitude, nth, groups)
            return ops.transpose(ops.reshape(kept, moved), inverse)

        return project

    return Twin("plain-sort", "sort each group of |w|, keep >= its n-th largest", make=make)


def random_mask(shape, seed=0):
    """About half the entries 1: a connectivity pattern of a kernel's shape."""
    return (np.random.default_rng(seed).random(shape) < 0.5).astype("float32")


def square(make):
    """`make(shape)` for kernels whose last two axes are equal, else None."""
    return lambda shape: make(shape) if shape[-1] == shape[-2] else None


def torch_parametrization(name):
    def parametrize(linear):
        import torch

        getattr(torch.nn.utils.parametrizations, name)(linear)

    return Twin(
        "torch",
        f"torch.nn.utils.parametrizations.{name}",
        ("torch",),
        parametrize=parametrize,
    )


SPECTRAL_NORMALIZATION = Twin(
    "keras",
    "keras.layers.SpectralNormalization",
    wrapper=lambda layer: keras.layers.SpectralNormalization(layer),
)

# TensorFlow's XLA runs an SVD as a Jacobi iteration, slowly on a CPU
# (measured, 2 cores, TF 2.21: 11 s per call at 256 x 256, 250 s for the first
# call at 512 x 512, 1.4 s at 576 x 64); the SVD-based cases stop at 256 x 256
# there. JAX's XLA calls LAPACK instead (0.006 s at 256 x 256).
# On torch (LAPACK) they stop at 2048 x 2048: at 4096 x 4096 each SVD-based
# contender's compile and first calls took about a minute (2 cores).
CPU_SVD_LIMIT = {"tensorflow": 256 * 256, "torch": 2048 * 2048}
# On TensorFlow the other matrix cases stop at 1024 x 1024: at 2048 x 2048 one
# of them (compile and first calls) had not finished after six minutes.
CPU_MATRIX_LIMIT = {"tensorflow": 1024 * 1024}

# A sort of 1e8 float32 entries takes about 16 s per call on 2 CPU cores (JAX,
# measured), and 50 Dykstra sweeps over them about 10 s: the sort-based and
# iterated cases stop at 1e7 entries.
SORT_LIMIT = 10**7

CASES = [
    Case(
        "NonNeg",
        "elementwise",
        lambda shape: kc.NonNeg(),
        (
            Twin(
                "keras",
                "keras.constraints.NonNeg",
                make=lambda shape: keras.constraints.NonNeg(),
                keras_constraint=True,
            ),
            optax_twin("projection_non_negative"),
        ),
        parity=True,
    ),
    Case(
        "Clip",
        "elementwise",
        lambda shape: kc.Clip(-0.5, 0.5),
        (optax_twin("projection_box", lower=-0.5, upper=0.5),),
    ),
    # The mask is a constant of the compiled program, kept as float16 0/1:
    # 2 bytes per entry read next to the weight's 4.
    Case("Mask", "elementwise", lambda shape: kc.Mask(random_mask(shape)), max_size=10**7),
    Case(
        "Fixed",
        "elementwise",
        lambda shape: kc.Fixed(random_mask(shape), values=0.5),
        max_size=10**7,
    ),
    Case(
        "Partial",
        "elementwise",
        lambda shape: kc.Partial(kc.NonNeg(), random_mask(shape)),
        max_size=10**7,
    ),
    Case(
        "CenterAround",
        "reduction",
        lambda shape: kc.CenterAround(0.0),
        (keras_guide_center_around(0.0),),
    ),
    Case(
        "MaxNorm",
        "reduction",
        lambda shape: kc.MaxNorm(2.0, axis=fan_in(shape)),
        (keras_twin(keras.constraints.MaxNorm, 2.0),),
        parity=True,
    ),
    Case(
        "MinMaxNorm",
        "reduction",
        lambda shape: kc.MinMaxNorm(0.5, 2.0, axis=fan_in(shape)),
        (keras_twin(keras.constraints.MinMaxNorm, 0.5, 2.0),),
        parity=True,
    ),
    Case(
        "UnitNorm",
        "reduction",
        lambda shape: kc.UnitNorm(axis=fan_in(shape)),
        (keras_twin(keras.constraints.UnitNorm),),
        parity=True,
    ),
    Case(
        "Simplex",
        "sort",
        lambda shape: kc.Simplex(1.0, axis=fan_in(shape)),
        (
            optax_twin("projection_simplex", per_unit=True, scale=1.0),
            sort_twin(kc.Simplex, 1.0),
        ),
        max_size=SORT_LIMIT,
    ),
    Case(
        "L1Ball",
        "sort",
        lambda shape: kc.L1Ball(1.0, axis=fan_in(shape)),
        (
            optax_twin("projection_l1_ball", per_unit=True, scale=1.0),
            sort_twin(kc.L1Ball, 1.0),
        ),
        max_size=SORT_LIMIT,
    ),
    # The capped and floored simplex: a sort of the 2n breakpoints per slice.
    Case(
        "Simplex[bounded]",
        "sort",
        lambda shape: kc.Simplex(1.0, axis=fan_in(shape), min_value=-0.01, max_value=0.5),
        max_size=SORT_LIMIT,
    ),
    # Slices longer than 64 take the merge of sorted blocks, O(n log^2 n) work
    # per slice of n; the pairwise hull it replaced (O(n^2): a 1000 x 1000
    # kernel is 1e9 pairs, ~5 s a call on two CPU cores) is timed against it
    # up to 1e5 entries.
    Case(
        "Monotonic",
        "isotonic",
        lambda shape: kc.Monotonic(axis=0),
        (
            Twin(
                "kconstraints",
                "kconstraints.Monotonic(method='pairwise') (before)",
                make=lambda shape: (
                    kc.Monotonic(axis=0, method="pairwise")
                    if shape[0] * shape[1] <= 10**5
                    else None
                ),
            ),
        ),
        max_size=SORT_LIMIT,
    ),
    # Magnitude pruning of half the weight (TopK over the whole tensor) and
    # the 2:4 pattern, each next to the same set found by a plain sort.
    Case(
        "TopK",
        "sort",
        lambda shape: kc.TopK(density=0.5),
        (plain_sort_top_k(0.5),),
        max_size=SORT_LIMIT,
    ),
    Case("NM", "sort", two_four, (plain_sort_n_m(),), max_size=SORT_LIMIT),
    Case(
        "Compose",
        "composite",
        lambda shape: kc.Compose([kc.NonNeg(), kc.MaxNorm(2.0, axis=fan_in(shape))]),
    ),
    # Dykstra's alternating projections: 50 sweeps of both projections.
    Case(
        "Intersection",
        "composite",
        lambda shape: kc.Intersection([kc.Clip(-0.5, 0.5), kc.CenterAround(0.0, axis=0)], 50),
        max_size=SORT_LIMIT,
    ),
    Case(
        "Orthogonal",
        "matrix",
        lambda shape: kc.Orthogonal(),
        (torch_parametrization("orthogonal"),),
        backend_max_size=CPU_SVD_LIMIT,
    ),
    Case(
        "Orthogonal[newton_schulz]",
        "matrix",
        lambda shape: kc.Orthogonal(method="newton_schulz"),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    Case(
        "SpectralNorm",
        "matrix",
        lambda shape: kc.SpectralNorm(1.0),
        (torch_parametrization("spectral_norm"), SPECTRAL_NORMALIZATION),
        backend_max_size=CPU_SVD_LIMIT,
    ),
    Case(
        "SpectralNorm[gram]",
        "matrix",
        lambda shape: kc.SpectralNorm(1.0, method="gram"),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    # The per-step estimate, timed in the same train-step group as the SVD
    # and Gram methods and as Keras's SpectralNormalization wrapper (the
    # "SpectralNorm" case's twin), which it is meant to match in cost.
    Case(
        "SpectralNorm[power]",
        "matrix",
        lambda shape: kc.SpectralNorm(1.0, method="power"),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    Case(
        "Symmetric",
        "matrix",
        square(lambda shape: kc.Symmetric()),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    Case("PSD", "matrix", square(lambda shape: kc.PSD()), backend_max_size=CPU_MATRIX_LIMIT),
    Case("LowRank", "matrix", lambda shape: kc.LowRank(8), backend_max_size=CPU_SVD_LIMIT),
    Case(
        "SingularValueBand",
        "matrix",
        lambda shape: kc.SingularValueBand(0.5, 1.0),
        backend_max_size=CPU_SVD_LIMIT,
    ),
    Case(
        "EigenBand",
        "matrix",
        square(lambda shape: kc.EigenBand(0.1, 1.0)),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    Case("Skew", "matrix", square(lambda shape: kc.Skew()), backend_max_size=CPU_MATRIX_LIMIT),
    Case(
        "Hyperplane",
        "reduction",
        lambda shape: kc.Hyperplane(fan_in_normal(shape), 1.0, axis=fan_in(shape)),
        (optax_plane_twin("projection_hyperplane", 1.0),),
    ),
    Case(
        "Halfspace",
        "reduction",
        lambda shape: kc.Halfspace(fan_in_normal(shape), -2.0, axis=fan_in(shape)),
        (optax_plane_twin("projection_halfspace", -2.0),),
    ),
    # Two thin matrix products per call: on Dense kernels 4 rows of A (sum,
    # two entries, a ramp), on Conv2D kernels of 3 x 3 taps the Bayar system
    # on each 2-D kernel.
    Case(
        "AffineSet",
        "reduction",
        affine_system,
        max_size=10**7,
    ),
    # Square kernels; 50 sweeps of a sort per row and per column, and the rounding step.
    Case(
        "DoublyStochastic",
        "matrix",
        square(lambda shape: kc.DoublyStochastic()),
        max_size=SORT_LIMIT // 10,
    ),
    # The operator norm of a convolution: a Gram iteration per sampled frequency
    # (544 of them for a 3 x 3 kernel, one for a Dense kernel).
    Case(
        "ConvSpectralNorm",
        "matrix",
        lambda shape: kc.ConvSpectralNorm(1.0),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    Case("AOL", "matrix", lambda shape: kc.AOL(), backend_max_size=CPU_MATRIX_LIMIT),
]


def select(names=None):
    """The cases named (all when `names` is None); unknown names are an error."""
    if names is None:
        return list(CASES)
    known = {c.name: c for c in CASES}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]


def twins_for(case, backend):
    return [t for t in case.twins if backend in t.backends]
