"""The weights the check tries: a few numbers that hypothesis draws, and the array NumPy builds from them.

An `Input` is its shape, dtype, kind, decimal exponent and seed. Hypothesis
draws and shrinks those five numbers, not the entries one by one, so a
failure shrinks to a readable input ("normal entries of 1e0, seed 0") that
anyone can rebuild with `Input(...).values()`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["DTYPES", "EXPONENTS", "KINDS", "Input", "exponent_range", "strategy", "varied_shapes"]

DTYPES = ("float16", "bfloat16", "float32", "float64")

#: What the entries of a weight look like. The first is where shrinking ends.
KINDS = {
    "normal": "normal entries",
    "ties": "a few distinct values, many zeros",
    "equal": "every entry equal",
    "one_huge": "one entry 10^4 times the others",
    "mixed": "mixed signs and magnitudes over 4 decades",
    "subnormal": "subnormal entries of the dtype, and zeros",
    "zeros": "all zeros",
}

#: The decimal exponents of the entries' scale: 1e-30 to 1e30, kept inside each dtype.
EXPONENTS = (-30, 30)

# (largest finite, smallest normal, smallest subnormal) of each dtype.
RANGE = {
    "float16": (65504.0, 2.0**-14, 2.0**-24),
    "bfloat16": (3.3895e38, 2.0**-126, 2.0**-133),
    "float32": (3.4028e38, 2.0**-126, 2.0**-149),
    "float64": (1.7976e308, 2.0**-1022, 2.0**-1074),
}


def exponent_range(dtype, size, exponents=EXPONENTS):
    """The exponents `e` whose entries of scale `10**e` fit `dtype`: `(low, high)`.

    High: the sum of a weight's `size` magnitudes (entries up to about 5
    times the scale) stays finite. Low: the typical entry is a normal
    number (the `subnormal` kind tries the rest). Both are clipped to the
    requested `exponents`, which keep 0 when the dtype allows it.
    """
    largest, normal, _ = RANGE[dtype]
    high = math.floor(math.log10(largest / (10 * max(size, 1))))
    low = math.ceil(math.log10(normal)) + 1
    low, high = max(low, exponents[0]), min(high, exponents[1])
    if low > high:
        raise ValueError(
            f"exponents: {exponents} leaves no scale that fits {dtype} for {size} entries "
            f"(it allows 1e{math.ceil(math.log10(normal)) + 1} to 1e{high})."
        )
    return low, high


@dataclasses.dataclass(frozen=True)
class Input:
    """One weight: `values()` rebuilds it, the same on every machine."""

    shape: tuple
    dtype: str
    kind: str = "normal"
    exponent: int = 0
    seed: int = 0

    def values(self):
        """The weight as float64 NumPy (the tensor of `dtype` rounds it)."""
        rng = np.random.default_rng(self.seed)
        shape, scale = self.shape, 10.0**self.exponent
        normal = rng.normal(size=shape)
        if self.kind == "normal":
            return normal * scale
        if self.kind == "ties":
            return rng.integers(-2, 3, size=shape) * 0.5 * scale
        if self.kind == "equal":
            return np.full(shape, rng.normal() * scale)
        if self.kind == "one_huge":
            w = normal * scale * 1e-4
            if w.size:
                w.flat[rng.integers(w.size)] = scale * rng.choice([-1.0, 1.0])
            return w
        if self.kind == "mixed":
            return normal * scale * 10.0 ** rng.uniform(-4, 0, size=shape)
        if self.kind == "subnormal":
            tiny = RANGE[self.dtype][2]
            return rng.integers(-8, 9, size=shape) * tiny
        if self.kind == "zeros":
            return np.zeros(shape)
        raise ValueError(f"Input: `kind` must be one of {list(KINDS)}, got {self.kind!r}.")

    def __str__(self):
        scale = "" if self.kind in ("subnormal", "zeros") else f" of scale 1e{self.exponent}"
        return (
            f"{KINDS[self.kind]}{scale}, shape {self.shape}, {self.dtype}, seed {self.seed}: "
            f"Input(shape={self.shape}, dtype={self.dtype!r}, kind={self.kind!r}, "
            f"exponent={self.exponent}, seed={self.seed}).values()"
        )


def varied_shapes(shape):
    """`shape`, and the shapes a constraint built per shape must also take.

    A size-1 axis, a long axis (4 times the longest), and for a matrix a
    tall and a wide one: the edge cases of slices and matrices.
    """
    shape = tuple(shape)
    shapes = [shape]
    if shape:
        longest = max(range(len(shape)), key=lambda a: shape[a])
        shapes.append((*shape[:-1], 1))
        shapes.append((*shape[:longest], 4 * shape[longest], *shape[longest + 1 :]))
    if len(shape) >= 2:
        rows, cols = shape[-2], shape[-1]
        shapes.append((*shape[:-2], max(rows, cols) * 3, min(rows, cols)))
        shapes.append((*shape[:-2], min(rows, cols), max(rows, cols) * 3))
    return list(dict.fromkeys(shapes))


def strategy(shapes, dtype, kinds=tuple(KINDS), exponents=EXPONENTS):
    """A hypothesis strategy of `Input`s of `dtype`: shapes, kinds, exponents and seeds.

    Shrinking goes to the first shape and kind, exponent 0 and seed 0.
    """
    from hypothesis import strategies as st

    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds: must be some of {list(KINDS)}, got {list(kinds)}.")

    @st.composite
    def draw_input(draw):
        shape = draw(st.sampled_from(shapes))
        low, high = exponent_range(dtype, math.prod(shape), exponents)
        exponent = draw(st.integers(low, high))
        kind = draw(st.sampled_from(kinds))
        seed = draw(st.integers(0, 2**16))
        return Input(tuple(shape), dtype, kind, exponent, seed)

    return draw_input()
