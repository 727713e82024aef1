"""The cases: one per example variant of the library's registry, with what only the benchmark knows.

Every variant of `kconstraints._registry.SPECS` (`"Simplex"`, `"Simplex[bounded]"`,
`"SpectralNorm[gram]"`, ...) is a case, built by the registry's own
`make(kernel_shape)`. Keyed by variant name, this module adds the other
libraries' ways to reach the same set (`TWINS`) and the largest weight each
case is timed at (`MAX_SIZE`, `CPU_MAX_SIZE`). `tests/test_benchmarks.py`
fails when a key here is not a registry variant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from kconstraints._registry import SPECS, fan_in

BACKENDS = ("jax", "tensorflow", "torch")


@dataclasses.dataclass(frozen=True)
class Twin:
    """Another library's way to get the same set, timed next to the case.

    One of `make(shape, constraint)` (a callable on a tensor; `constraint` is
    the case's own, for its arguments), `wrapper` (Keras layer -> wrapped
    layer, train step only) or `parametrize` (a torch `nn.Linear`,
    parametrized in place) is set.
    """

    library: str
    name: str
    backends: tuple = BACKENDS
    make: Callable | None = None
    wrapper: Callable | None = None
    parametrize: Callable | None = None

    @property
    def keras_constraint(self):
        """Keras's own twins with a `make` are `keras.constraints`: usable as kernel constraints."""
        return self.library == "keras" and self.make is not None


@dataclasses.dataclass(frozen=True)
class Case:
    """One registry variant: `make(kernel_shape)` returns it, or None where it does not apply."""

    name: str
    family: str  # the registry's: elementwise, slice, matrix, combination
    make: Callable
    twins: tuple = ()
    max_size: int | None = None
    cpu_max_size: dict = dataclasses.field(default_factory=dict)

    def limit(self, backend, gpu=False, cpu_only=False):
        """The largest weight timed on `backend` (None: none); `cpu_only`: the CPU limit alone."""
        cpu = None if gpu else self.cpu_max_size.get(backend)
        return cpu if cpu_only else min(filter(None, (self.max_size, cpu)), default=None)

    def twins_on(self, backend):
        return [t for t in self.twins if backend in t.backends]


def keras_twin(cls, *args):
    """A `keras.constraints` class built like the case, `axis` set per kernel."""
    make = lambda shape, c: cls(*args, axis=fan_in(shape))  # noqa: E731
    return Twin("keras", f"keras.constraints.{cls.__name__}", make=make)


def optax_twin(projection, per_unit=False, plane=False, **kwargs):
    """An `optax.projections` function; `per_unit` vmaps it over the units (the last axis)."""

    def make(shape, c):
        import jax
        from optax import projections

        fn = getattr(projections, projection)
        if plane:  # the case's own normal vector and offset
            normal = np.asarray(c.normal, "float32").reshape(-1)
            project = lambda w: fn(w, normal, c.offset)  # noqa: E731
        else:
            project = lambda w: fn(w, **kwargs)  # noqa: E731
        if not per_unit:
            return project
        # optax projects a whole array onto one set; mapping over the last
        # axis gives the per-unit sets of the kconstraints case.
        flat = jax.vmap(project, in_axes=-1, out_axes=-1)
        return lambda w: flat(w.reshape(-1, shape[-1])).reshape(shape)

    suffix = " (vmap over units)" if per_unit else ""
    return Twin("optax", f"optax.projections.{projection}{suffix}", ("jax",), make)


def _keep_at_least(magnitude, threshold, w):
    return ops.where(magnitude >= threshold, w, ops.zeros_like(w))


def _plain_top_k(shape, c):
    """TopK's set the plain way: one full sort, keep what reaches the k-th magnitude."""
    n, k = int(np.prod(shape)), c.count(shape)

    def project(w):
        magnitude = ops.abs(w)
        return _keep_at_least(magnitude, ops.sort(ops.reshape(magnitude, (-1,)))[n - k], w)

    return project


def _plain_n_m(shape, c):
    """NM's set the plain way: sort each group, keep what reaches its n-th magnitude."""
    perm = [a for a in range(len(shape)) if a != c.axis] + [c.axis]
    moved, inverse = [shape[a] for a in perm], [perm.index(a) for a in range(len(perm))]

    def project(w):
        groups = ops.reshape(ops.transpose(w, perm), (-1, c.m))
        magnitude = ops.abs(groups)
        nth = ops.sort(magnitude)[:, c.m - c.n : c.m - c.n + 1]
        kept = _keep_at_least(magnitude, nth, groups)
        return ops.transpose(ops.reshape(kept, moved), inverse)

    return project


def torch_parametrization(name):
    def parametrize(linear):
        import torch

        getattr(torch.nn.utils.parametrizations, name)(linear)

    label = f"torch.nn.utils.parametrizations.{name}"
    return Twin("torch", label, ("torch",), parametrize=parametrize)


KERAS_NONNEG = Twin(
    "keras", "keras.constraints.NonNeg", make=lambda s, c: keras.constraints.NonNeg()
)
# The custom constraint that the Keras constraints guide writes by hand (ref_value 0).
KERAS_GUIDE = Twin(
    "keras-guide",
    "w - mean(w) + ref_value (Keras guide)",
    make=lambda s, c: lambda w: w - ops.mean(w),
)
SPECTRAL_NORMALIZATION = Twin(
    "keras", "keras.layers.SpectralNormalization", wrapper=keras.layers.SpectralNormalization
)
PLAIN_TOP_K = Twin("plain-sort", "sort |w|, keep >= the k-th largest", make=_plain_top_k)
PLAIN_N_M = Twin("plain-sort", "sort each group of |w|, keep >= its n-th largest", make=_plain_n_m)

TWINS = {
    "NonNeg": (KERAS_NONNEG, optax_twin("projection_non_negative")),
    "Clip": (optax_twin("projection_box", lower=-0.5, upper=0.5),),
    "CenterAround": (KERAS_GUIDE,),
    "MaxNorm": (keras_twin(keras.constraints.MaxNorm, 2.0),),
    "MinMaxNorm": (keras_twin(keras.constraints.MinMaxNorm, 0.5, 2.0),),
    "UnitNorm": (keras_twin(keras.constraints.UnitNorm),),
    "Simplex": (optax_twin("projection_simplex", per_unit=True, scale=1.0),),
    "L1Ball": (optax_twin("projection_l1_ball", per_unit=True, scale=1.0),),
    # optax's signs are 0 at zeros (the zero slice stays 0, off the sphere); gaussian kernels have none.
    "L1Sphere": (optax_twin("projection_l1_sphere", per_unit=True, scale=1.0),),
    "TopK": (PLAIN_TOP_K,),
    "NM": (PLAIN_N_M,),
    "Hyperplane": (optax_twin("projection_hyperplane", per_unit=True, plane=True),),
    "Halfspace": (optax_twin("projection_halfspace", per_unit=True, plane=True),),
    "Orthogonal": (torch_parametrization("orthogonal"),),
    "SpectralNorm": (torch_parametrization("spectral_norm"), SPECTRAL_NORMALIZATION),
}

# A sort of 1e8 float32 entries takes about 16 s per call on 2 CPU cores (JAX),
# 50 Dykstra sweeps over them about 10 s: sort-based and iterated cases stop at
# 1e7. The masks are constants of the compiled program (float16, 2 bytes per
# entry). DoublyStochastic and Transport: 50 sweeps of a sort per row and per column.
SORT_LIMIT = 10**7
MAX_SIZE = {
    **dict.fromkeys(["Mask", "Fixed", "Partial", "AffineSet"], 10**7),
    **dict.fromkeys(["Simplex", "Simplex[bounded]", "L1Ball", "Monotonic"], SORT_LIMIT),
    **dict.fromkeys(["Simplex[weighted]", "L1Sphere"], SORT_LIMIT),
    **dict.fromkeys(["TopK", "NM", "SparseSimplex", "Intersection"], SORT_LIMIT),
    "DoublyStochastic": SORT_LIMIT // 10,
    "Transport": SORT_LIMIT // 10,
    # Every chord of every slice: a (316, 316) kernel is 316 slices of 317**2
    # chords each way (about 3 s per call on a loaded 2-core CPU, JAX).
    "Unimodal": 10**5,
}
# On a CPU (a GPU run ignores these). TensorFlow's XLA runs an SVD as a Jacobi
# iteration (2 cores, TF 2.21: 11 s per call at 256 x 256, 250 s for the first
# call at 512 x 512), so the SVD-based cases stop at 256 x 256 there; on torch
# at 2048 x 2048 (at 4096 each compile and first calls took about a minute).
# The other matrix cases stop at 1024 x 1024 on TensorFlow: at 2048 one of them
# had not finished after six minutes.
SVD = {"tensorflow": 256 * 256, "torch": 2048 * 2048}
MATRIX = {"tensorflow": 1024 * 1024}
SVD_BASED = ["Orthogonal", "SpectralNorm", "SpectralNorm[scale]", "LowRank", "SingularValueBand"]
CPU_MAX_SIZE = {
    **dict.fromkeys(SVD_BASED, SVD),
    **dict.fromkeys(["Orthogonal[newton_schulz]", "SpectralNorm[gram]", "Symmetric"], MATRIX),
    **dict.fromkeys(["SpectralNorm[power]", "PSD", "EigenBand"], MATRIX),
    **dict.fromkeys(["Skew", "ConvSpectralNorm", "AOL"], MATRIX),
}


def registry_cases():
    """A `Case` per example variant of every registered constraint, in declaration order."""

    def case(spec, name, make):
        limits = MAX_SIZE.get(name), CPU_MAX_SIZE.get(name, {})
        return Case(name, spec.family, make, TWINS.get(name, ()), *limits)

    return [case(spec, name, make) for spec in SPECS for name, make in spec.examples.items()]


def select(names=None):
    """The cases named (all when `names` is None); unknown names are an error."""
    cases = registry_cases()
    if names is None:
        return cases
    known = {c.name: c for c in cases}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown benchmark case(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]
