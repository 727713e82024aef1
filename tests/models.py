"""Models, data and training helpers shared by the tests that train.

Builders return fresh models carrying kconstraints on their weights;
`push_outside` makes their weights infeasible on purpose, `fit` trains them
on `data`, and `assert_feasible` checks every constrained weight afterwards
against `references.violation`, not against the library's own `violations`.
"""

from __future__ import annotations

import keras
import numpy as np

import kconstraints as kc
from kconstraints._registry import FAMILIES, SPECS
from tests.helpers import dtype_of, to_np, tol
from tests.references import violation

# ------------------------------------------------------------------ data


def data(input_shape, n=32, seed=0):
    """`n` normal inputs of `input_shape` and `n` normal scalar targets, float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype("float32")
    return x, rng.normal(size=(n, 1)).astype("float32")


def fit(
    model,
    optimizer=None,
    callbacks=(),
    *,
    input_shape=(6,),
    seed=0,
    epochs=2,
    jit_compile=False,
    verbose=0,
):
    """Compile with an mse loss and fit on `data(input_shape, seed=seed)`.

    32 samples in batches of 8: 4 steps an epoch. `optimizer` None is Adam(0.05).
    Returns the `History`.
    """
    optimizer = keras.optimizers.Adam(0.05) if optimizer is None else optimizer
    model.compile(optimizer, "mse", jit_compile=jit_compile)
    x, y = data(input_shape, seed=seed)
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=verbose, callbacks=list(callbacks))


# ------------------------------------------------------------- feasibility


def constrained(model):
    """The weights of `model` that carry a constraint, found apart from the library."""
    return [v for v in model.weights if getattr(v, "constraint", None) is not None]


def snapshot(model):
    """The constrained weights of `model` as float64 NumPy, by path."""
    return {v.path: to_np(v.value) for v in constrained(model)}


def push_outside(model):
    """Initial weights are never projected: make them infeasible on purpose."""
    rng = np.random.default_rng(0)
    for v in constrained(model):
        v.assign(rng.normal(size=v.shape).astype(v.dtype) * 3.0)
    assert max(violation(v) for v in constrained(model)) > 0.1


def assert_feasible(model, before=None, atol=None):
    """Every constrained weight of `model` lies in its constraint's set.

    Args:
        before: a `snapshot(model)` taken before training: then at least one
            constrained weight must have changed, or the test measured nothing.
        atol: the largest violation allowed. None: a few roundings of each
            weight's own dtype at its magnitude (P(w) of a half-precision w is
            rounded to that precision too).
    """
    variables = constrained(model)
    assert variables, "the model has no constrained weight"
    if before is not None:
        after = snapshot(model)
        assert any(not np.allclose(before[p], after[p]) for p in after), "training changed nothing"
    for v in variables:
        if atol is None:
            scale = float(np.max(np.abs(to_np(v.value)), initial=0.0))
            limit = tol(dtype_of(v), scale, factor=4)
        else:
            limit = atol
        assert violation(v) <= limit, (v.path, violation(v), limit)


# ----------------------------------------------------------------- models


def dense_model():
    """Five Dense layers carrying the norm and bound constraints; returns (model, input shape)."""
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
    """Two Conv2D layers and a Dense one, constrained; returns (model, input shape)."""
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(
        4, 3, activation="relu", kernel_constraint=kc.MaxNorm(0.5, axis=[0, 1, 2])
    )(inputs)
    x = keras.layers.Conv2D(3, 3, kernel_constraint=kc.NonNeg(), bias_constraint=kc.NonNeg())(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, kernel_constraint=kc.Clip(-0.05, 0.05))(x)
    return keras.Model(inputs, outputs), (8, 8, 2)


def family_pick(family, kernel_shape):
    """The registry's constraint for `family` on a kernel of `kernel_shape`.

    The first spec of the family, in registry order, whose example builds for
    that shape, an exact projection where the family has one: its result is
    then what a second projection leaves unchanged, which `assert_feasible`
    checks. None for a family without examples (`soft`).
    """
    specs = sorted((s for s in SPECS if s.family == family), key=lambda s: s.exact is not True)
    for spec in specs:
        for make in spec.examples.values():
            constraint = make(kernel_shape)
            if constraint is not None:
                return constraint
    return None


def soft_pick(constraint, strength=0.1):
    """The registry's soft constraint (a `kernel_regularizer`) on `constraint`'s set."""
    (spec,) = [s for s in SPECS if s.family == "soft"]
    return spec.cls(constraint, strength)


def every_kind_model():
    """A constraint of every family of the registry, and the ones an input-convex
    network and a masked layer use, on Dense layers with inputs of shape (6,).

    One layer per family carries `family_pick` (the "soft" one a penalty,
    `soft_pick`, on an otherwise free kernel), then Simplex, L1Ball,
    Monotonic, Mask, Fixed, Partial, Compose with a Penalty, and Intersection.
    The "convex" layer is the one an input-convex network constrains: its
    kernel is non-negative on the 8 rows fed by the previous layer (the
    z-path) and free on the 6 rows fed by the input (the x-path).
    """
    inputs = keras.Input((6,))
    h, width = inputs, 6
    for family in FAMILIES:
        if family == "soft":
            kwargs = {"kernel_regularizer": soft_pick(family_pick("slice", (width, 8)))}
        else:
            kwargs = {"kernel_constraint": family_pick(family, (width, 8))}
        h, width = keras.layers.Dense(8, name=family, **kwargs)(h), 8
    h = keras.layers.Dense(8, kernel_constraint=kc.Simplex(axis=0), name="simplex")(h)
    h = keras.layers.Dense(
        8, kernel_constraint=kc.L1Ball(1.0), bias_constraint=kc.Monotonic(), name="l1"
    )(h)
    h = keras.layers.Dense(8, kernel_constraint=kc.Monotonic(axis=0), name="monotonic")(h)
    h = keras.layers.Dense(
        8,
        kernel_constraint=kc.Mask(np.tril(np.ones((8, 8)))),
        bias_constraint=kc.Fixed([1, 1, 0, 0, 0, 0, 0, 0], values=0.5),
        name="masked",
    )(h)
    z_rows = np.r_[np.ones(8), np.zeros(6)][:, None]
    h = keras.layers.Dense(4, kernel_constraint=kc.Partial(kc.NonNeg(), z_rows), name="convex")(
        keras.layers.Concatenate()([h, inputs])
    )
    h = keras.layers.Dense(
        4,
        kernel_constraint=kc.Compose([kc.Monotonic(), kc.Clip(0.0, 1.0)]),
        kernel_regularizer=kc.Penalty(kc.MaxNorm(0.5), strength=0.1),
        name="compose",
    )(h)
    outputs = keras.layers.Dense(
        1, kernel_constraint=kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], 3), name="both"
    )(h)
    return keras.Model(inputs, outputs)


def small_model():
    """Two constrained kernels: small, since torch.compile time grows with the model."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", kernel_constraint=kc.NonNeg()),
            keras.layers.Dense(1, kernel_constraint=kc.MaxNorm(0.5)),
        ]
    )


def half_model():
    """Four constrained Dense layers on inputs (6,), built in the global dtype policy.

    Glorot-initialised kernels violate every one of these constraints.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(
        8, activation="relu", kernel_constraint=kc.NonNeg(), bias_constraint=kc.Clip(-0.05, 0.05)
    )(inputs)
    x = keras.layers.Dense(8, activation="tanh", kernel_constraint=kc.MaxNorm(0.3))(x)
    x = keras.layers.Dense(4, kernel_constraint=kc.UnitNorm(), use_bias=False)(x)
    outputs = keras.layers.Dense(1, kernel_constraint=kc.MinMaxNorm(0.2, 0.8))(x)
    return keras.Model(inputs, outputs)


class Shifted(keras.layers.Layer):
    """A layer with a constrained non-trainable variable that fit() never projects."""

    def build(self, input_shape):
        self.shift = self.add_weight(
            shape=(input_shape[-1],), initializer="zeros", trainable=False, constraint=kc.NonNeg()
        )

    def call(self, x):
        return x + self.shift


def scaled_model():
    """dense_model behind a Shifted layer: a constrained non-trainable variable too."""
    inner, shape = dense_model()
    return keras.Sequential([keras.Input(shape), Shifted(), inner]), shape


class PositiveScale(keras.layers.Layer):
    """A custom layer whose own variable must stay non-negative; it starts at -0.5."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(-0.5),
            constraint=kc.NonNeg(),
        )

    def call(self, x):
        return x * self.scale
