"""The backend glue of the tests and the benchmarks: compile, count graph breaks, find devices.

Every line of the test suite and of `benchmarks/` that names JAX, TensorFlow
or torch, other than a test written against one backend's own API, lives
here. The rest is written against Keras and this module.
"""

from __future__ import annotations

import contextlib

import keras

BACKEND = keras.backend.backend()


def jit(fn, *, fullgraph=False, dynamic=None):
    """`fn` compiled by the backend's compiler: `jax.jit`, TF XLA or `torch.compile`.

    JAX jit and TF XLA always trace a function whole. torch.compile falls
    back to eager Python at a graph break, silently, unless `fullgraph=True`;
    `dynamic=False` keeps its shapes static, as XLA's are.
    """
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    return torch.compile(fn, fullgraph=fullgraph, dynamic=dynamic)


def graph_break_count():
    """The graph breaks torch.compile has met in this process so far; always 0 elsewhere.

    Code after a break runs as Python, and where it repeats a frame per
    constraint it counts toward Dynamo's recompile limit. JAX and TensorFlow
    trace the whole function or fail.
    """
    if BACKEND != "torch":
        return 0
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values())


@contextlib.contextmanager
def graph_breaks():
    """`with graph_breaks() as n:` leaves in `n[0]` the graph breaks met inside."""
    count = [0]
    before = graph_break_count()
    yield count
    count[0] = graph_break_count() - before


def reset_compiler():
    """Forget every compiled torch graph (a no-op on JAX and TensorFlow)."""
    if BACKEND == "torch":
        import torch

        torch._dynamo.reset()


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
