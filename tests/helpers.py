"""Backend-neutral helpers: conversion to float64 NumPy, dtypes, tolerances, test inputs.

Everything that names JAX, TensorFlow or torch is in `tests/backend.py`.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
from keras import ops

__all__ = [
    "EPS",
    "FLOAT_DTYPES",
    "dtype_of",
    "param_id",
    "sample",
    "spectrum",
    "tensor",
    "to_np",
    "tol",
]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# Relative machine epsilon of each dtype.
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


def tol(dtype, scale=1.0, factor=64):
    """Absolute tolerance for values of magnitude `scale` in `dtype`."""
    return factor * EPS[dtype] * max(1.0, float(scale))


def param_id(value):
    """A test id for a parameter: a function by its name, anything else by `str`.

    A function's repr holds its address, which differs between processes, and
    pytest-xdist's workers must collect the same ids.
    """
    return value.__name__ if inspect.isfunction(value) else str(value)


def dtype_of(x):
    """The standard name of a tensor's or variable's dtype ('float32', 'bfloat16', ...)."""
    return keras.backend.standardize_dtype(x.dtype)


def to_np(x):
    """Any backend tensor or variable -> float64 NumPy."""
    x = ops.convert_to_numpy(ops.cast(x, "float32") if dtype_of(x) == "bfloat16" else x)
    return np.asarray(x, dtype="float64")


def tensor(x, dtype="float32"):
    """A backend tensor of `dtype` holding `x` (rounded from float64)."""
    return ops.convert_to_tensor(np.asarray(x, dtype="float64"), dtype=dtype)


def sample(shape, kind="normal", seed=0):
    """Test inputs: 'normal', 'ties' (few distinct values, many zeros), 'large' (~1e6)."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=shape)
    if kind == "ties":
        return rng.integers(-2, 3, size=shape) * 0.5
    if kind == "large":
        return rng.normal(size=shape) * 1e6
    raise ValueError(kind)


def spectrum(s, shape=(7, 4), seed=0):
    """A float64 matrix of `shape` with singular values `s`."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], len(s))))
    return (u * np.asarray(s, dtype="float64")) @ v.T
