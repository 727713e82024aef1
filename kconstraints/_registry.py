"""The catalogue: one `Spec` per constraint, filled by `register` where the class is defined.

A constraint's `@register(...)` is its only declaration. Everything that
lists the constraints reads `SPECS` or `NAMES`: `kconstraints.get` and
`deserialize`, the README and docs tables (`docs/catalogue.py` writes them),
the API reference, the degenerate-weight and property-coverage tests, and
the benchmark cases. This module imports nothing of the package, so any
module may import it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import keras
import numpy as np

PACKAGE = "kconstraints"

#: How a constraint acts on a weight, in the order the docs list them.
FAMILIES = {
    "elementwise": "on each entry on its own",
    "slice": "on each slice along `axis` (a unit's or a filter's weights)",
    "matrix": "on each matrix, or on a kernel as an operator",
    "combination": "on the result of other constraints",
    "soft": "not a projection: a penalty in the loss",
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the project knows about one constraint class.

    `convex`: its set is convex for the examples' arguments (the projection
    is then non-expansive). `exact`: True when it computes the exact
    Euclidean projection for every argument, else a sentence saying when it
    does not. `examples`: variant name -> `make(kernel_shape)`, the
    constraint built for a Dense kernel `(input_dim, units)`, a Conv2D kernel
    `(rows, cols, in_channels, filters)` or the test shape `shape`, or None
    where it does not apply (square-only constraints on a tall kernel).
    `uses`: what a user wants when they reach for it, the rows of the docs'
    "Which constraint?" table (constraints with the same phrase share a row).
    """

    cls: type
    family: str
    convex: bool
    exact: bool | str
    summary: str
    examples: dict[str, Callable]
    shape: tuple
    uses: tuple = ()

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def module(self) -> str:
        return self.cls.__module__.rpartition(".")[2]


#: Every registered class, in the order the modules declare them.
SPECS: list[Spec] = []
#: Class name and snake_case alias -> class, for `kconstraints.get`.
NAMES: dict[str, type] = {}


def snake_case(name: str) -> str:
    """`MaxNorm` -> `max_norm`, `L1Ball` -> `l1_ball`, `PSD` -> `psd`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def fan_in(shape):
    """The axes of one unit's (Dense) or one filter's (Conv) incoming weights."""
    return list(range(len(shape) - 1))


def stacked(shape):
    """True for a stack of matrices `(batch, rows, cols)`: the test shape of the matrix family."""
    return len(shape) == 3


def register(*, family, convex, exact, summary, examples, shape=(6, 4), uses=()):
    """Declare a constraint: Keras serialization (safe mode), `get`, and its `Spec`.

    `examples` is one `make(kernel_shape)` or a dict from variant labels to
    them; the label `""` is the plain variant, named after the class, and
    `"gram"` becomes `"SpectralNorm[gram]"`. `uses`: a phrase or a tuple of
    them (see `Spec`).
    """
    if family not in FAMILIES:
        raise ValueError(f"register: `family` must be one of {list(FAMILIES)}, got {family!r}.")
    if exact is not True and not (isinstance(exact, str) and exact):
        raise ValueError(f"register: `exact` must be True or a sentence, got {exact!r}.")
    if callable(examples):
        examples = {"": examples}
    uses = (uses,) if isinstance(uses, str) else tuple(uses)

    def declare(cls):
        unregister(cls.__name__)  # a class defined again (a reloaded module, a test) replaces it
        cls = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
        named = {(f"{cls.__name__}[{k}]" if k else cls.__name__): v for k, v in examples.items()}
        spec = Spec(cls, family, convex, exact, summary, named, tuple(shape), uses)
        SPECS.append(spec)
        NAMES[cls.__name__] = NAMES[snake_case(cls.__name__)] = cls
        return cls

    return declare


def unregister(name):
    """Remove a class from the catalogue (a test that declares a constraint cleans up)."""
    SPECS[:] = [s for s in SPECS if s.name != name]
    for key in (name, snake_case(name)):
        NAMES.pop(key, None)
    keras.saving.get_custom_objects().pop(f"{PACKAGE}>{name}", None)


def spec_of(cls) -> Spec:
    """The `Spec` of a registered class; a clear error for one that is not."""
    for spec in SPECS:
        if spec.cls is cls:
            return spec
    raise KeyError(f"{cls.__name__} is not registered: decorate it with @register(...).")


def constraint_specs():
    """The specs of the projections and rescalings: every family but `soft`."""
    return [s for s in SPECS if s.family != "soft"]


# ------------------------------------------------ what the examples are built from


def random_mask(shape, seed=0):
    """About half the entries 1: a connectivity pattern of a kernel's shape."""
    return (np.random.default_rng(seed).random(shape) < 0.5).astype("float32")


def fan_in_normal(shape):
    """A fixed normal vector of one unit's (or filter's) flattened incoming weights."""
    size = int(np.prod(shape[:-1]))
    return np.random.default_rng(1).normal(size=size).astype("float32")


def bayar_system():
    """Bayar & Stamm's (2016) constraint on a 3 x 3 kernel: centre -1, the rest summing to 1."""
    centre = np.zeros((3, 3))
    centre[1, 1] = 1.0
    return np.stack([centre, 1.0 - centre]), [-1.0, 1.0]


def affine_rows(shape):
    """Four rows per unit (a sum, the first and last entry, a ramp) and their offsets."""
    size = int(np.prod(shape[:-1]))
    first, last = np.zeros(size), np.zeros(size)
    first[0], last[-1] = 1.0, 1.0
    return np.stack([np.ones(size), first, last, np.linspace(-1.0, 1.0, size)]), [1.0, 0, 0, 0.5]


def polyhedron_rows(shape):
    """One sum equality and three fixed random inequalities per unit: `(A, b, G, h)`."""
    size = int(np.prod(shape[:-1]))
    g = np.random.default_rng(2).normal(size=(3, size))
    return np.ones((1, size)), [1.0], g, [0.5, -0.2, 0.3]


def two_four_axis(shape):
    """The first input axis whose length is a multiple of 4 (Conv2D: the input channels), else None."""
    return next((a for a in fan_in(shape) if shape[a] % 4 == 0), None)


def square(make):
    """`make(shape)` for weights whose last two axes are equal, else None."""
    return lambda shape: make(shape) if shape[-1] == shape[-2] else None
