"""Constraints inside real training: fit() eager and compiled, custom loops, add_weight."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.helpers import BACKEND, to_np


def violation(variable):
    """max |w - P(w)|: zero exactly when w is in the constraint's set."""
    w = variable.value
    return float(np.max(np.abs(to_np(w) - to_np(variable.constraint(w)))))


def constrained(model):
    return [v for v in model.weights if getattr(v, "constraint", None) is not None]


def push_outside(model):
    """Initial weights are never projected: make them infeasible on purpose."""
    rng = np.random.default_rng(0)
    for v in constrained(model):
        v.assign(rng.normal(size=v.shape).astype(v.dtype) * 3.0)
    assert max(violation(v) for v in constrained(model)) > 0.1


def dense_model():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(
        8, activation="relu", kernel_constraint=kc.MaxNorm(0.5), bias_constraint=kc.Clip(-0.1, 0.1)
    )(inputs)
    x = keras.layers.Dense(8, activation="relu", kernel_constraint=kc.NonNeg())(x)
    x = keras.layers.Dense(4, kernel_constraint=kc.UnitNorm(), use_bias=False)(x)
    x = keras.layers.Dense(4, kernel_constraint=kc.MinMaxNorm(0.2, 0.8))(x)
    outputs = keras.layers.Dense(1, kernel_constraint=kc.CenterAround(0.1))(x)
    return keras.Model(inputs, outputs), (6,)


def conv_model():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(
        4, 3, activation="relu", kernel_constraint=kc.MaxNorm(0.5, axis=[0, 1, 2])
    )(inputs)
    x = keras.layers.Conv2D(3, 3, kernel_constraint=kc.NonNeg(), bias_constraint=kc.NonNeg())(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, kernel_constraint=kc.Clip(-0.05, 0.05))(x)
    return keras.Model(inputs, outputs), (8, 8, 2)


def data(input_shape, n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    return x, rng.normal(size=(n, 1)).astype("float32")


def assert_feasible(model, before):
    after = {v.path: to_np(v.value) for v in constrained(model)}
    assert any(not np.allclose(before[p], after[p]) for p in after), "training changed nothing"
    for v in constrained(model):
        assert violation(v) <= 1e-5, (v.path, violation(v))


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("make", [dense_model, conv_model], ids=["dense", "conv2d"])
def test_fit_keeps_every_constrained_weight_feasible(make, jit_compile):
    keras.utils.set_random_seed(0)
    model, shape = make()
    push_outside(model)
    before = {v.path: to_np(v.value) for v in constrained(model)}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", jit_compile=jit_compile)
    if jit_compile:
        assert model.jit_compile, f"{BACKEND}: Keras turned jit_compile off"
    x, y = data(shape)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert_feasible(model, before)


def _custom_loop(model, x, y, steps):
    """A hand-written training loop, the way each backend's users write one."""
    opt = keras.optimizers.Adam(0.01)  # steps bounded by the rate: no blow-up
    x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    variables = model.trainable_variables
    opt.build(variables)
    if BACKEND == "jax":
        import jax

        def loss_fn(tv, ntv, x, y):
            pred, ntv = model.stateless_call(tv, ntv, x)
            return keras.ops.mean((pred - y) ** 2), ntv

        @jax.jit
        def step(tv, ntv, ov, x, y):
            (_, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x, y)
            tv, ov = opt.stateless_apply(ov, grads, tv)
            return tv, ntv, ov

        tv = [v.value for v in variables]
        ntv = [v.value for v in model.non_trainable_variables]
        ov = [v.value for v in opt.variables]
        for _ in range(steps):
            tv, ntv, ov = step(tv, ntv, ov, x, y)
        for v, value in zip(variables, tv, strict=True):
            v.assign(value)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((model(x) - y) ** 2)
            opt.apply(tape.gradient(loss, variables), variables)
    else:
        import torch

        for _ in range(steps):
            model.zero_grad()
            loss = keras.ops.mean((model(x) - y) ** 2)
            loss.backward()
            grads = [v.value.grad for v in variables]
            with torch.no_grad():
                opt.apply(grads, variables)


@pytest.mark.parametrize("make", [dense_model, conv_model], ids=["dense", "conv2d"])
def test_custom_training_loop_applies_constraints(make):
    keras.utils.set_random_seed(1)
    model, shape = make()
    push_outside(model)
    before = {v.path: to_np(v.value) for v in constrained(model)}
    x, y = data(shape)
    _custom_loop(model, x, y, steps=3)
    assert_feasible(model, before)


class PositiveScale(keras.layers.Layer):
    """A custom layer whose own variable must stay positive (background/000)."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(-0.5),
            constraint=kc.NonNeg(),
        )

    def call(self, x):
        return x * self.scale


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
def test_add_weight_variable_stays_non_negative(jit_compile):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,))
    layer = PositiveScale()
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    assert to_np(layer.scale.value).min() < 0  # starts infeasible
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit_compile)
    x, y = data((4,), seed=3)
    model.fit(x, -y, batch_size=8, epochs=2, verbose=0)
    assert to_np(layer.scale.value).min() >= 0
