"""What the benchmarks need per backend and nothing else does: synchronise, place, describe, compile.

Compiling, counting graph breaks and finding devices are shared with the
test suite and come from `tests/backend.py`. Everything else in
`benchmarks/` is written against Keras and these two modules.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import subprocess
import time

import keras
import numpy as np

from tests.backend import BACKEND, device_of, graph_break_count, jit, on_gpu, reset_compiler

# Distributions whose versions a result records when they are installed.
PACKAGES = "kconstraints keras numpy jax jaxlib jax-cuda12-plugin jax-cuda13-plugin tensorflow"
PACKAGES = (PACKAGES + " tensorflow-cpu torch optax pytest-benchmark matplotlib").split()


def sync(out=None):
    """Wait until every queued computation (and `out`) is finished on the device."""
    if BACKEND == "jax":
        import jax

        jax.block_until_ready(out)
    elif BACKEND == "tensorflow":
        if on_gpu():
            import tensorflow as tf

            tf.test.experimental.sync_devices()
    else:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def to_device(array):
    """A NumPy array as a backend tensor on Keras's default device."""
    if BACKEND == "tensorflow" and on_gpu():
        import tensorflow as tf

        # Eager constants start on the host; the identity copies it to the GPU.
        with tf.device("GPU:0"):
            return tf.identity(keras.ops.convert_to_tensor(array))
    return keras.ops.convert_to_tensor(array)


def compile_fn(fn):
    """`fn` compiled the way each backend's users compile a train step (torch: static shapes)."""
    return jit(fn, dynamic=False) if BACKEND == "torch" else jit(fn)


@contextlib.contextmanager
def compiler_scope():
    """Around one contender: on torch an empty Dynamo cache, and its recompile limit an error.

    Past `recompile_limit` entries per code object (8; Keras's torch
    `train_step` and `Constraint.__call__` are one code object each) Dynamo
    runs the frame eagerly and only logs it, which would time eager code as
    compiled: the limit is raised for a whole model and reaching it raises.
    """
    if BACKEND != "torch":
        yield
        return
    import torch

    limits = dict(recompile_limit=256, accumulated_recompile_limit=2048)
    with torch._dynamo.config.patch(**limits, fail_on_recompile_limit_hit=True):
        reset_compiler()
        yield


# The last output of the contender being timed, which `clock` waits for.
LAST = [None]


def timed(call):
    """The body pytest-benchmark times: one call, its output kept for `clock`."""
    LAST[0] = call()


def clock():
    """pytest-benchmark's timer (`--benchmark-timer`): the device synchronised, then the clock.

    pytest-benchmark reads the timer before and after each round of calls;
    waiting for the last output there times the work of the whole round (JAX
    and GPUs run asynchronously), not its dispatch, and not the latency of a
    synchronisation after every call (3 times a 1e4-entry copy on JAX, CPU).
    """
    sync(LAST[0])
    return time.perf_counter()


def first_call(call):
    """Run `call` once (compiling it) and once more; (compile seconds, graph breaks, seconds)."""
    seen, start = graph_break_count(), time.perf_counter()
    sync(call())
    compile_s = time.perf_counter() - start
    breaks = graph_break_count() - seen
    start = time.perf_counter()
    sync(call())
    return compile_s, breaks if BACKEND == "torch" else None, time.perf_counter() - start


def describe() -> dict:
    """What pytest-benchmark's machine_info lacks: the backend, its device, the packages, the load."""
    info = {"backend": BACKEND, "kind": "gpu" if on_gpu() else "cpu"}
    if on_gpu():
        info["name"] = _gpu_name()
    info["array_device"] = device_of(to_device(np.zeros(4, "float32")))
    info["packages"] = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info["packages"][name] = importlib.metadata.version(name)
    if BACKEND == "torch":
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def _gpu_name() -> str:
    """The first GPU's name as its driver reports it (`NVIDIA H100 80GB HBM3`), on every backend."""
    query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(query, capture_output=True, text=True, check=True).stdout.split("\n")[
            0
        ]
    return "GPU"


def train_step(model, x, y):
    """A zero-argument callable running one compiled `model.train_step` on `(x, y)`.

    Keras's own step (`fit()` runs the same one), compiled as `fit()`
    compiles it with `jit_compile=True`. The model must be compiled and built.
    """
    data = (x, y)
    if BACKEND == "jax":
        import jax

        step = jax.jit(model.train_step, donate_argnums=0)
        groups = (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
        # Copies: donation frees the buffers, and the Keras variables keep theirs.
        state = [[keras.ops.copy(v.value) for v in group] for group in groups]

        def call():
            nonlocal state
            logs, state = step(state, data)
            return logs, state

        return call
    step = compile_fn(model.train_step)
    return lambda: step(data)


def torch_mlp_step(spec, project=None, parametrize=None):
    """A compiled train step of the MLP in plain torch, for torch's own parametrizations.

    `project(kernel_shape)` builds a constraint applied to each kernel after
    the optimizer step, as Keras applies constraints, in Keras's layout
    `(input_dim, units)` (a torch `Linear` stores the transpose);
    `parametrize(linear)` reparametrizes every layer instead.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    inputs, hidden, classes, batch = spec
    pairs = list(itertools.pairwise([inputs, *hidden, classes]))
    linears = [torch.nn.Linear(a, b) for a, b in pairs]
    constraints = [None if project is None else project(pair) for pair in pairs]
    for linear in linears if parametrize else ():
        parametrize(linear)
    layers = [m for linear in linears for m in (linear, torch.nn.ReLU())]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, inputs, device=device)
    y = torch.randint(0, classes, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for linear, constraint in zip(linears, constraints, strict=True):
                if constraint is not None:
                    linear.weight.copy_(constraint(linear.weight.T).T)
        return loss

    return compile_fn(step)
