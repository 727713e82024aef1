"""Constraints inside real training: fit() eager and compiled, custom loops, add_weight;
a constraint of every family of the registry (`tests.models.family_pick`) in one
compiled function and in one trained model."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints._registry import FAMILIES, spec_of
from tests.backend import BACKEND, apply_gradients, jit
from tests.helpers import sample, tensor, to_np
from tests.models import (
    PositiveScale,
    assert_feasible,
    constrained,
    conv_model,
    data,
    dense_model,
    every_kind_model,
    family_pick,
    fit,
    push_outside,
    snapshot,
    soft_pick,
)

# A violation this small is float32 rounding of a projected weight.
FEASIBLE = 1e-5


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("make", [dense_model, conv_model], ids=["dense", "conv2d"])
def test_fit_keeps_every_constrained_weight_feasible(make, jit_compile):
    keras.utils.set_random_seed(0)
    model, shape = make()
    push_outside(model)
    before = snapshot(model)
    fit(model, input_shape=shape, jit_compile=jit_compile)
    if jit_compile:
        assert model.jit_compile, f"{BACKEND}: Keras turned jit_compile off"
    assert_feasible(model, before, atol=FEASIBLE)


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
        for _ in range(steps):
            model.zero_grad()
            loss = keras.ops.mean((model(x) - y) ** 2)
            loss.backward()
            apply_gradients(opt, [v.value.grad for v in variables], variables)


@pytest.mark.parametrize("make", [dense_model, conv_model], ids=["dense", "conv2d"])
def test_custom_training_loop_applies_constraints(make):
    keras.utils.set_random_seed(1)
    model, shape = make()
    push_outside(model)
    before = snapshot(model)
    x, y = data(shape)
    _custom_loop(model, x, y, steps=3)
    assert_feasible(model, before, atol=FEASIBLE)


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


# ------------------------------------------------ every kind of constraint

MASK = sample((6, 4), "ties", seed=60) >= 0
COLUMN_BOUNDS = np.linspace(0.1, 1.0, 4)  # one bound per column of a (6, 4) weight

ONE_GRAPH = [
    *(family_pick(family, (6, 4)) for family in FAMILIES if family != "soft"),
    kc.Simplex(axis=0),
    kc.L1Ball(1.0, axis=[0, 1]),
    kc.Monotonic(axis=-1, increasing=False),
    kc.Clip(-COLUMN_BOUNDS, COLUMN_BOUNDS),
    kc.Mask(MASK),
    kc.Fixed(MASK, 0.5),
    kc.Partial(kc.NonNeg(), MASK),
    kc.Compose([kc.Monotonic(), kc.NonNeg()]),
    kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], iterations=2),
]


def test_every_kind_of_constraint_compiles_into_one_graph():
    # One compiled function for all of them: torch.compile takes seconds per function.
    weights = [tensor(sample((6, 4), "normal", seed=65 + i)) for i in range(len(ONE_GRAPH))]
    penalty = soft_pick(kc.Monotonic(), strength=0.5)
    assert {spec_of(type(c)).family for c in [*ONE_GRAPH, penalty]} == set(FAMILIES)

    def everything(*ws):
        return [c(w) for c, w in zip(ONE_GRAPH, ws, strict=True)] + [penalty(ws[0])]

    # fullgraph=True: torch.compile raises at a graph break instead of running Python.
    compiled = jit(everything, fullgraph=True)(*weights)
    for got, want in zip(compiled, everything(*weights), strict=True):
        np.testing.assert_allclose(to_np(got), to_np(want), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "jit_compile",
    [False, pytest.param(True, marks=pytest.mark.long_on("torch"))],
    ids=["eager", "jit"],
)
def test_fit_keeps_every_kind_of_constrained_weight_feasible(jit_compile):
    keras.utils.set_random_seed(5)
    model = every_kind_model()
    hard = {spec_of(type(v.constraint)).family for v in constrained(model)}
    soft = model.get_layer("soft")
    assert hard | {spec_of(type(soft.kernel_regularizer)).family} == set(FAMILIES)
    push_outside(model)
    before = snapshot(model)
    fit(model, seed=6, jit_compile=jit_compile)
    if jit_compile:
        assert model.jit_compile, f"{BACKEND}: Keras turned jit_compile off"
    assert_feasible(model, before, atol=FEASIBLE)
    # The penalties are the model's losses, and the weight a soft constraint
    # pulls is never projected: it is still outside the set.
    penalized = [layer for layer in model.layers if getattr(layer, "kernel_regularizer", None)]
    penalties = [to_np(layer.kernel_regularizer(layer.kernel.value)) for layer in penalized]
    np.testing.assert_allclose(sum(to_np(x) for x in model.losses), sum(penalties), rtol=1e-5)
    assert soft.kernel.constraint is None
    assert to_np(soft.kernel_regularizer(soft.kernel.value)) > 1e-3
    convex = to_np(model.get_layer("convex").kernel.value)
    assert convex[:8].min() >= 0 and convex[8:].min() < 0, "z-path non-negative, x-path free"
