"""Backend glue for the tests: conversion, dtypes, jit, tolerances.

The only backend-specific code of the test suite lives here.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# Relative machine epsilon of each dtype.
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


def tol(dtype, scale=1.0, factor=64):
    """Absolute tolerance for values of magnitude `scale` in `dtype`."""
    return factor * EPS[dtype] * max(1.0, float(scale))


def to_np(x):
    """Any backend tensor or variable -> float64 NumPy."""
    x = ops.convert_to_numpy(ops.cast(x, "float32") if _is_bf16(x) else x)
    return np.asarray(x, dtype="float64")


def _is_bf16(x):
    return keras.backend.standardize_dtype(x.dtype) == "bfloat16"


def tensor(x, dtype="float32"):
    return ops.convert_to_tensor(np.asarray(x, dtype="float64"), dtype=dtype)


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


@contextlib.contextmanager
def float64_enabled():
    """JAX truncates float64 to float32 unless x64 mode is on: switch it on here."""
    if BACKEND != "jax":
        yield
        return
    import jax

    old = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def jit(fn):
    """Compile `fn` with the backend's compiler: jax.jit, TF XLA or torch.compile."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    return torch.compile(fn)


@contextlib.contextmanager
def graph_breaks():
    """`with graph_breaks() as n:` leaves in `n[0]` the graph breaks torch.compile met inside.

    Code after a break runs as Python, and where it repeats a frame per
    constraint it counts toward Dynamo's recompile limit. Always 0 on JAX and
    TensorFlow, whose compilers trace the whole function or fail.
    """
    count = [0]
    if BACKEND != "torch":
        yield count
        return
    from torch._dynamo.utils import counters

    before = sum(counters["graph_break"].values())
    yield count
    count[0] = sum(counters["graph_break"].values()) - before


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


def device_kind(x):
    """'gpu' or 'cpu': where a backend tensor or Keras variable's value lives."""
    if BACKEND == "jax":
        return "gpu" if any(d.platform in ("gpu", "cuda", "rocm") for d in x.devices()) else "cpu"
    if BACKEND == "tensorflow":
        return "gpu" if "GPU" in x.device.upper() else "cpu"
    return "gpu" if x.device.type == "cuda" else "cpu"


def gradient(fn, x):
    """The gradient of a scalar function at `x`, by the backend's own autodiff."""
    if BACKEND == "jax":
        import jax

        return jax.grad(fn)(x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x)
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def jit_whole(fn):
    """Like `jit`, but torch.compile must capture one graph (`fullgraph=True`).

    JAX jit and TF XLA always trace a function whole; torch.compile
    otherwise falls back to eager Python at a graph break, silently.
    """
    if BACKEND != "torch":
        return jit(fn)
    import torch

    return torch.compile(fn, fullgraph=True)
