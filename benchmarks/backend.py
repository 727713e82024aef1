"""The backend-specific code of the benchmarks only: synchronise, place, describe, train.

Compiling, counting graph breaks and finding devices are shared with the
test suite and live in `tests/backend.py` (imported from here; run
`python -m benchmarks` from the repository root). Everything else in
`benchmarks/` is written against Keras and these two modules.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import platform

import keras
import numpy as np

from benchmarks.config import cpu_name, thread_env, versions
from tests.backend import BACKEND, device_of, graph_break_count, jit, on_gpu, reset_compiler

__all__ = [
    "BACKEND",
    "compile_fn",
    "describe",
    "device_of",
    "fresh",
    "graph_break_count",
    "group_scope",
    "on_gpu",
    "sync",
    "to_device",
    "torch_mlp_step",
    "train_step",
]

_fresh_count = itertools.count()


def fresh(fn):
    """`fn` behind a wrapper with a code object of its own.

    torch's Dynamo keeps its compiled graphs per code object, and checks the
    guards of every entry on each call. Every kconstraints constraint runs
    through `Constraint.__call__` and every Keras model through
    `Model.train_step`, so compiling many of them in one process would make
    later calls check the guards of all earlier ones (and past 8 entries run
    eagerly). A user compiles one model; a wrapper per function gives each
    contender that situation.
    """
    namespace = {"fn": fn}
    name = f"compiled_{next(_fresh_count)}"
    exec(f"def {name}(*args):\n    return fn(*args)\n", namespace)
    return namespace[name]


def compile_fn(fn):
    """`fn` compiled the way each backend's users compile a train step.

    On torch behind a `fresh` wrapper, with static shapes as XLA has on the
    other two backends (one compile per shape).
    """
    if BACKEND == "torch":
        return jit(fresh(fn), dynamic=False)
    return jit(fn)


# Dynamo cache entries allowed per code object within one group of contenders.
GROUP_RECOMPILE_LIMIT = 256


@contextlib.contextmanager
def group_scope():
    """Around the compiling and timing of one group of contenders.

    On torch: an empty Dynamo cache and stricter limits, restored on exit.
    Dynamo keeps compiled graphs per code object. Where a graph break splits
    a trace, the frame after it (`Constraint.__call__`, Keras's torch
    `train_step`) is compiled on its own, one cache entry per contender that
    enters it; past `recompile_limit` entries (8) Dynamo runs that frame
    eagerly and only logs a warning, which would time eager code as compiled.
    So the group starts from an empty cache, the limit is raised to hold a
    group, and reaching it raises: the contender gets an error, not a wrong
    time.
    """
    if BACKEND != "torch":
        yield
        return
    import torch

    limits = dict(
        recompile_limit=GROUP_RECOMPILE_LIMIT,
        accumulated_recompile_limit=8 * GROUP_RECOMPILE_LIMIT,
        fail_on_recompile_limit_hit=True,
    )
    with torch._dynamo.config.patch(**limits):
        reset_compiler()
        yield


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


def _gpu_name() -> str:
    if BACKEND == "jax":
        import jax

        return jax.devices()[0].device_kind
    if BACKEND == "tensorflow":
        import tensorflow as tf

        gpu = tf.config.list_physical_devices("GPU")[0]
        return tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
    import torch

    return torch.cuda.get_device_name(0)


def describe() -> dict:
    """The device, the host and every package version, for the result file."""
    info = {
        "backend": BACKEND,
        "kind": "gpu" if on_gpu() else "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions(),
    }
    info["name"] = _gpu_name() if on_gpu() else info["cpu"]
    info["threads_env"] = {k: os.environ[k] for k in thread_env(1) if k in os.environ}
    if BACKEND == "torch":
        import torch

        info["torch_threads"] = torch.get_num_threads()
    info["array_device"] = device_of(to_device(np.zeros(4, "float32")))
    return info


def train_step(model, x, y):
    """A zero-argument callable that runs one compiled `model.train_step` on `(x, y)`.

    The step is Keras's own (`fit()` runs the same one), compiled as `fit()`
    compiles it with `jit_compile=True`; the call returns the step's logs,
    which `sync` waits for. The model must be compiled and built.
    """
    data = (x, y)
    if BACKEND == "jax":
        import jax

        step = jax.jit(model.train_step, donate_argnums=0)
        variables = (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        )
        # Copies: donation frees the buffers, and the Keras variables keep theirs.
        state = [[keras.ops.copy(v.value) for v in group] for group in variables]

        def call():
            nonlocal state
            logs, state = step(state, data)
            return logs

        return call
    step = compile_fn(model.train_step)
    return lambda: step(data)


def torch_mlp_step(spec, project=None, parametrize=None):
    """A compiled train step of the MLP written in plain torch (for torch's own tools).

    `project(kernel_shape)` builds a constraint that is applied to each kernel
    after the optimizer step, as Keras applies constraints; `parametrize(linear)`
    reparametrizes every layer, as `torch.nn.utils.parametrizations` does. A
    torch `Linear` stores the transpose of a Keras Dense kernel: `project`
    sees the Keras layout `(input_dim, units)`.
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    inputs, hidden, classes, batch = spec
    widths = [inputs, *hidden, classes]
    pairs = list(itertools.pairwise(widths))
    linears = [torch.nn.Linear(a, b) for a, b in pairs]
    constraints = [None if project is None else project(pair) for pair in pairs]
    if parametrize is not None:
        for linear in linears:
            parametrize(linear)
    layers = []
    for linear in linears:
        layers += [linear, torch.nn.ReLU()]
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
