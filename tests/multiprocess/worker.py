"""One process of a multi-process training run: `python -m tests.multiprocess.worker ENGINE ...`.

`tests/test_multiprocess.py` starts two of these on 127.0.0.1 (ranks 0 and 1
of a world of 2) and one alone (a world of 1: the single-process reference),
for one engine:

- `jax`: `keras.distribution` on JAX's multi-process runtime, one CPU device
  per process and gloo collectives; `fit()` under `DataParallel`, then under
  `ModelParallel` with every constrained kernel split between the two
  processes along an axis its constraint reduces over.
- `torch`: the Keras model in `DistributedDataParallel` (gloo), trained by
  `torch.optim.SGD` in a torch loop, the constraints applied by
  `kconstraints.project_after_step`.
- `tensorflow`: `MultiWorkerMirroredStrategy` over two workers, a custom
  training loop with Keras's optimizer; then `fit()` is tried (see
  `tests/test_multiprocess.py`).

Each process writes the weights it ends with, whole, to `OUT/ENGINE-wW-rR.npz`
and what it saw (the library's `violations`, the shardings, the time) to
`OUT/ENGINE-wW-rR.json`. `docs/distributed.md` shows each engine's training
code from this file, between the `--8<--` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import time

import keras
import numpy as np

import kconstraints as kc
from kconstraints.callbacks import EnforceConstraints

# Each constrained layer, its kernel's constraint, and the ModelParallel
# layout of that (inputs, units) kernel: the axis split between the
# processes is one the constraint reduces over, so its norms, sorts and SVD
# need both halves.
LAYERS = [
    ("maxnorm", kc.MaxNorm(0.5, axis=0), ("model", None)),  # a norm per unit
    ("simplex", kc.Simplex(axis=0), ("model", None)),  # a sort per unit
    ("monotonic", kc.Monotonic(axis=0), ("model", None)),  # isotonic regression per unit
    ("spectral", kc.SpectralNorm(1.0), (None, "model")),  # an SVD of the whole kernel
    ("nonneg", kc.NonNeg(), ("model", None)),  # elementwise; its bias is clipped
]
BIAS = kc.Clip(-0.1, 0.1)
FEATURES, SAMPLES, BATCH, EPOCHS = 6, 32, 8, 2
# What each engine's two processes run, and the single-process run each is compared with.
MODES = {
    "jax": {"data_parallel": "single", "model_parallel": "single"},
    "torch": {"ddp": "single"},
    "tensorflow": {"custom_loop": "single"},
}


def build():
    """The model, with the same weights in every process: normal draws, none of them feasible."""
    inputs = keras.Input((FEATURES,))
    x = inputs
    for name, constraint, _ in LAYERS[:-1]:
        x = keras.layers.Dense(8, activation="tanh", kernel_constraint=constraint, name=name)(x)
    name, constraint, _ = LAYERS[-1]
    last = keras.layers.Dense(1, kernel_constraint=constraint, bias_constraint=BIAS, name=name)
    model = keras.Model(inputs, last(x))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return model


def data():
    """The whole data set, the same in every process: SAMPLES rows, in global batches of BATCH."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(SAMPLES, FEATURES)).astype("float32")
    return x, rng.normal(size=(SAMPLES, 1)).astype("float32")


def share(array, rank, world):
    """This process's share of each global batch, in order: rows rank*b..(rank+1)*b of each, b = BATCH/world."""
    per = BATCH // world
    return array.reshape(SAMPLES // BATCH, world, per, -1)[:, rank].reshape(-1, array.shape[-1])


def whole(model):
    return {v.path: keras.ops.convert_to_numpy(v.value) for v in model.weights}


# ------------------------------------------------------------------- JAX


# --8<-- [start:jax]
def jax_distributions(rank, world, coordinator):
    """Join the other processes; DataParallel, and ModelParallel splitting the kernels as LAYERS says."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPUs; GPUs use NCCL
    keras.distribution.initialize(coordinator, num_processes=world, process_id=rank)
    devices = keras.distribution.list_devices()  # the devices of every process
    # With NumPy data Keras can not split the batches: each process passes its own.
    data_parallel = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    mesh = keras.distribution.DeviceMesh((1, len(devices)), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for name, _, layout in LAYERS:
        layout_map[f"{name}/kernel"] = layout
    model_parallel = keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch", auto_shard_dataset=False
    )
    return data_parallel, model_parallel


def fit(model, x, y, batch_size):
    """fit() as on one device; under a distribution, in its scope, in every process."""
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    callbacks = [EnforceConstraints()]  # kc.project at the start and the end, across processes
    model.fit(
        x, y, batch_size=batch_size, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks
    )


# --8<-- [end:jax]


COLLECTIVE = r"\b(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\("


def collectives():
    """The collectives XLA compiles into each LAYERS projection of a 64 x 32 kernel split each way."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("model",))
    w = np.random.default_rng(2).normal(size=(64, 32)).astype("float32")
    found = {}
    for name, constraint, _ in LAYERS:
        for layout in [("model", None), (None, "model")]:
            sharding = NamedSharding(mesh, PartitionSpec(*layout))
            x = jax.make_array_from_callback(w.shape, sharding, lambda index: w[index])
            hlo = jax.jit(constraint, out_shardings=sharding).lower(x).compile().as_text()
            found[f"{name} {layout}"] = sorted(set(re.findall(COLLECTIVE, hlo)))
    return found


def run_jax(rank, world, addresses):
    from jax.experimental import multihost_utils

    x, y = data()
    if world == 1:
        model = build()
        fit(model, x, y, BATCH)
        return {"single": (whole(model), {"violations": kc.violations(model)})}
    data_parallel, model_parallel = jax_distributions(rank, world, addresses[0])
    plans = {
        # Each process feeds its share of every global batch.
        "data_parallel": (
            data_parallel,
            share(x, rank, world),
            share(y, rank, world),
            BATCH // world,
        ),
        # The mesh has one "batch" row: every process feeds the whole batches.
        "model_parallel": (model_parallel, x, y, BATCH),
    }
    runs = {}
    for mode, (distribution, x_here, y_here, batch_here) in plans.items():
        with distribution.scope():
            model = build()
            fit(model, x_here, y_here, batch_here)
            # A weight spread over several processes is read whole by gathering it.
            weights = {
                v.path: np.asarray(multihost_utils.process_allgather(v.value, tiled=True))
                for v in model.weights
            }
            sharding = {
                v.path: {
                    "spec": [None if a is None else str(a) for a in v.value.sharding.spec],
                    "replicated": v.value.sharding.is_fully_replicated,
                    "processes": len({d.process_index for d in v.value.sharding.device_set}),
                }
                for v in model.weights
            }
            runs[mode] = (weights, {"violations": kc.violations(model), "sharding": sharding})
    runs["model_parallel"][1]["collectives"] = collectives()
    return runs


# ----------------------------------------------------------------- torch


# --8<-- [start:torch]
def train_torch(model, x, y, world):
    """Keras's model in a torch loop: DDP over the processes, a torch optimizer, the hook."""
    import torch

    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    kc.project_after_step(optimizer, net)  # projects now, and after every optimizer.step()
    steps = len(x) // (BATCH // world)
    for _ in range(EPOCHS):
        for xb, yb in zip(np.split(x, steps), np.split(y, steps), strict=True):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(net(torch.from_numpy(xb)), torch.from_numpy(yb))
            loss.backward()  # DDP averages the gradients over the processes
            optimizer.step()  # then the hook projects, alike in every process
    return net


# --8<-- [end:torch]


def run_torch(rank, world, addresses):
    import torch

    torch.set_num_threads(1)  # the processes share the machine's cores
    if world > 1:
        init = f"tcp://{addresses[0]}"
        torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = build()
    x, y = (share(a, rank, world) for a in data())
    net = train_torch(model, x, y, world)
    runs = {"ddp" if world > 1 else "single": (whole(model), {"violations": kc.violations(net)})}
    if world > 1:
        torch.distributed.destroy_process_group()
    return runs


# ------------------------------------------------------------ TensorFlow

# The error Keras 3.15's fit() raises under MultiWorkerMirroredStrategy before
# its first step: it passes the (x, y) batch, a nest, to `strategy.reduce`,
# which TensorFlow takes single values for.
FIT_ERROR = "Attempt to convert a value (PerReplica"


# --8<-- [start:tensorflow]
def train_tensorflow(strategy, x, y):
    """A custom training loop: each worker passes its share of every global batch."""
    import tensorflow as tf

    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        optimizer.build(model.trainable_variables)
    kc.project(model)  # the initial weights, alike on every worker

    @tf.function
    def train_step(xb, yb):
        def on_replica(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum((model(xb) - yb) ** 2) / BATCH  # the global batch's mean
            grads = tape.gradient(loss, model.trainable_variables)
            # Sums the gradients over the replicas, updates, then applies each constraint.
            optimizer.apply(grads, model.trainable_variables)

        strategy.run(on_replica, args=(xb, yb))

    steps = SAMPLES // BATCH
    for _ in range(EPOCHS):
        for xb, yb in zip(np.split(x, steps), np.split(y, steps), strict=True):
            train_step(tf.constant(xb), tf.constant(yb))
    return model


# --8<-- [end:tensorflow]


def run_tensorflow(rank, world, addresses):
    import tensorflow as tf

    if world > 1:
        task = {"type": "worker", "index": rank}
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": task})
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()  # the default: no distribution
    x, y = data()
    model = train_tensorflow(strategy, share(x, rank, world), share(y, rank, world))
    runs = {
        "custom_loop" if world > 1 else "single": (
            whole(model),
            {"violations": kc.violations(model)},
        )
    }
    error = None
    with strategy.scope():
        model = build()
        try:
            fit(model, x, y, BATCH)  # Keras splits the global batches between the workers
        except ValueError as e:
            if FIT_ERROR not in str(e):
                raise
            error = str(e).splitlines()[0]
    runs["fit" if world > 1 else "single_fit"] = (
        whole(model) if error is None else {},
        {"violations": kc.violations(model), "error": error},
    )
    return runs


ENGINES = {"jax": run_jax, "torch": run_torch, "tensorflow": run_tensorflow}


def files(out, engine, world, rank):
    """Where one process writes its weights (.npz) and what it saw (.json)."""
    stem = pathlib.Path(out) / f"{engine}-w{world}-r{rank}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=sorted(ENGINES))
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--addresses", default="", help="host:port,host:port (TF: one a worker)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if keras.backend.backend() != args.engine:
        parser.error(
            f"KERAS_BACKEND must be {args.engine}, Keras runs on {keras.backend.backend()}"
        )
    start = time.perf_counter()
    runs = ENGINES[args.engine](args.rank, args.world, args.addresses.split(","))
    weights = {f"{mode}|{path}": w for mode, (ws, _) in runs.items() for path, w in ws.items()}
    info = {mode: seen for mode, (_, seen) in runs.items()}
    info["seconds"] = time.perf_counter() - start
    npz, seen = files(args.out, args.engine, args.world, args.rank)
    np.savez(npz, **weights)
    seen.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
