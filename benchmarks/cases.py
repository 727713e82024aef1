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


def keras_guide_center_around(ref_value):
    """The custom constraint that the Keras constraints guide writes by hand."""

    def make(shape):
        return lambda w: w - ops.mean(w) + ref_value

    return Twin("keras-guide", "w - mean(w) + ref_value (Keras guide)", make=make)


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
        (optax_twin("projection_simplex", per_unit=True, scale=1.0),),
        max_size=SORT_LIMIT,
    ),
    Case(
        "L1Ball",
        "sort",
        lambda shape: kc.L1Ball(1.0, axis=fan_in(shape)),
        (optax_twin("projection_l1_ball", per_unit=True, scale=1.0),),
        max_size=SORT_LIMIT,
    ),
    # O(n^2) work per slice of n: a 1000 x 1000 kernel is 1e9 pairs, ~5 s a
    # call on two CPU cores. The growth shows by 1e5.
    Case("Monotonic", "isotonic", lambda shape: kc.Monotonic(axis=0), max_size=10**5),
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
    Case(
        "Symmetric",
        "matrix",
        square(lambda shape: kc.Symmetric()),
        backend_max_size=CPU_MATRIX_LIMIT,
    ),
    Case("PSD", "matrix", square(lambda shape: kc.PSD()), backend_max_size=CPU_MATRIX_LIMIT),
    Case("LowRank", "matrix", lambda shape: kc.LowRank(8), backend_max_size=CPU_SVD_LIMIT),
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
