"""Distributed fit() equals single-device fit(), and every constraint holds.

JAX: `keras.distribution.DataParallel` and `ModelParallel` over 8 virtual CPU
devices, the `ModelParallel` layout sharding each constrained kernel along
the axes its constraint reduces over, so the projection's norms and sorts
cross shards. TensorFlow: `tf.distribute.MirroredStrategy` over 4 logical
CPU devices. Both need the devices set up before the backend starts, which a
whole-suite run can not do: `nox -s distributed` runs this file on its own
(with `XLA_FLAGS=--xla_force_host_platform_device_count=8` for JAX); elsewhere
it is skipped, saying why.
"""

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints.callbacks import EnforceConstraints
from tests.backend import BACKEND
from tests.helpers import to_np

DEVICES = {"jax": 8, "tensorflow": 4}
HOW_TO = "run it with `nox -s distributed`, which sets the devices up before the backend starts"


def _jax_devices():
    import jax

    return len(jax.devices("cpu"))


def _tf_logical_cpus(n):
    """Split the CPU into n logical devices; possible only before TensorFlow initialises."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * n
        )
    except RuntimeError:  # already initialised by an earlier test
        pass
    return len(tf.config.list_logical_devices("CPU"))


if BACKEND not in DEVICES:
    pytest.skip(
        "keras.distribution runs on JAX, and MirroredStrategy is TensorFlow's; "
        "torch distribution (DDP) needs several processes, out of scope here",
        allow_module_level=True,
    )
FOUND = _jax_devices() if BACKEND == "jax" else _tf_logical_cpus(DEVICES[BACKEND])
if FOUND < DEVICES[BACKEND]:
    pytest.skip(
        f"{BACKEND} sees {FOUND} CPU device(s), {DEVICES[BACKEND]} needed: {HOW_TO}",
        allow_module_level=True,
    )

# Each constrained layer, its constraint, and the ModelParallel layout of its
# kernel: the sharded axis is one the constraint reduces over.
LAYERS = [
    ("conv", kc.MaxNorm(1.0, axis=[0, 1, 2]), (None, None, "model", None)),
    ("maxnorm", kc.MaxNorm(0.5, axis=0), ("model", None)),
    ("unitnorm", kc.UnitNorm(axis=0), ("model", None)),
    ("l1ball", kc.L1Ball(1.0, axis=0), ("model", None)),
    ("center", kc.CenterAround(0.0), ("model", None)),
]


def build():
    inputs = keras.Input((6, 6, 4))
    (_, conv, _), *dense = LAYERS
    x = keras.layers.Conv2D(8, 3, activation="relu", kernel_constraint=conv, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    for name, constraint, _ in dense:
        x = keras.layers.Dense(16, activation="tanh", kernel_constraint=constraint, name=name)(x)
    outputs = keras.layers.Dense(
        1, kernel_constraint=kc.NonNeg(), bias_constraint=kc.Clip(-0.1, 0.1), name="nonneg"
    )(x)
    return keras.Model(inputs, outputs)


def train(scope, initial):
    """The same fit() from the same weights: EMA, so EnforceConstraints has work at the end."""
    with scope:
        model = build()
        model.set_weights(initial)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9, use_ema=True), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 6, 4)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model.fit(
        x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[EnforceConstraints()]
    )
    return model


@pytest.fixture(scope="module")
def reference():
    keras.utils.set_random_seed(0)
    initial = build().get_weights()
    model = train(_NoScope(), initial)
    return initial, {v.path: to_np(v.value) for v in model.weights}


class _NoScope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def jax_data_parallel():
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu"))


def jax_model_parallel():
    mesh = keras.distribution.DeviceMesh(
        (2, 4), ("batch", "model"), devices=keras.distribution.list_devices("cpu")
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    for name, _, layout in LAYERS:
        layout_map[f".*{name}/kernel"] = layout
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def tf_mirrored():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES["tensorflow"])])


STRATEGIES = {
    "jax": [jax_data_parallel, jax_model_parallel],
    "tensorflow": [tf_mirrored],
}


def assert_sharded_as_asked(model, strategy):
    """The test means nothing if the kernels were silently replicated."""
    if strategy is jax_model_parallel:
        for name, _, layout in LAYERS:
            spec = tuple(model.get_layer(name).kernel.value.sharding.spec)
            assert spec + (None,) * (len(layout) - len(spec)) == layout, (name, spec)
    elif strategy is tf_mirrored:
        assert model.distribute_strategy.num_replicas_in_sync == DEVICES["tensorflow"]
    else:
        assert len(model.get_layer("conv").kernel.value.sharding.device_set) == DEVICES["jax"]


@pytest.mark.parametrize("strategy", STRATEGIES[BACKEND], ids=lambda s: s.__name__)
def test_distributed_fit_matches_single_device_and_constraints_hold(strategy, reference):
    initial, want = reference
    distribution = strategy()
    model = train(distribution.scope(), initial)
    assert_sharded_as_asked(model, strategy)
    for v in model.weights:
        got = to_np(v.value)
        np.testing.assert_allclose(got, want[v.path], rtol=1e-4, atol=1e-5, err_msg=v.path)
    worst = kc.violations(model)
    assert len(worst) == len(LAYERS) + 2
    assert max(worst.values()) <= 1e-5, worst
