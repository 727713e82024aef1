"""The backend glue of the tests and the benchmarks: compile, count graph breaks, find devices.

Every line of the test suite and of `benchmarks/` that names JAX, TensorFlow
or torch, other than a test written against one backend's own API, lives
here. The rest is written against Keras and this module.
"""

from __future__ import annotations

import contextlib

import keras

# The compilers and the float64 switch are the package's (kconstraints.testing uses them too).
from kconstraints._backend import (  # noqa: F401
    float64_enabled,
    graph_break_count,
    jit,
    reset_compiler,
)

BACKEND = keras.backend.backend()


@contextlib.contextmanager
def graph_breaks():
    """`with graph_breaks() as n:` leaves in `n[0]` the graph breaks met inside."""
    count = [0]
    before = graph_break_count()
    yield count
    count[0] = graph_break_count() - before


def on_gpu() -> bool:
    """True when Keras places new arrays on a GPU."""
    if BACKEND == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    import torch

    return torch.cuda.is_available()


def device_of(x) -> str:
    """Where a tensor lives, in the backend's own words (`cuda:0`, `TFRT_CPU_0`, ...)."""
    if BACKEND == "jax":
        return ",".join(sorted(str(d) for d in x.devices()))
    if BACKEND == "tensorflow":
        return x.device
    return str(x.device)


def device_kind(x) -> str:
    """'gpu' or 'cpu': where a backend tensor or a Keras variable's value lives."""
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


def apply_gradients(optimizer, grads, variables):
    """`optimizer.apply` outside a train step, as a custom loop calls it.

    torch would record the in-place update for autograd: it runs under
    `torch.no_grad()` there.
    """
    if BACKEND != "torch":
        optimizer.apply(grads, variables)
        return
    import torch

    with torch.no_grad():
        optimizer.apply(grads, variables)
