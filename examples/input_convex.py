"""An input-convex neural network (ICNN) with `Partial(NonNeg(), mask)`, checked convex after training.

The question, as Keras users ask it: "I built an input-convex network
(Amos, Xu and Kolter 2017, arXiv:1609.07152): each layer takes the previous
layer's output z, whose weights must be non-negative, and the input x
passed through, whose weights are free. I wrote a custom layer with two
kernels and a penalty in `add_loss`, and its gradients misbehave. How do I
constrain only part of a layer's weights?"

The answer: no custom layer. Each hidden layer is a plain `Dense` on
`concat([z, x])` whose kernel has `Partial(NonNeg(), mask)`, the mask being 1
on the rows fed by z and 0 on the rows fed by x. With convex, non-decreasing
activations (softplus), the output is convex in x: a non-negative sum of
convex functions plus a linear function of x stays convex, layer by layer.
`EnforceConstraints` projects the initial weights too (Keras never does), so
the network is convex from the first step, not only after it.

After training on a convex target, the script checks convexity numerically,
in float64 NumPy from the trained weights: for random pairs (a, b) and
t in (0, 1), `f(t a + (1-t) b) <= t f(a) + (1-t) f(b)`. It reports the
worst gap of that inequality for the trained network (<= 0 up to rounding)
and for the same network with its initial, unprojected weights (with
Glorot's negative entries; usually > 0, not convex, though a draw can look
convex on the sampled square). It exits with status 1 if the trained
network is not convex.

Run: `KERAS_BACKEND=tensorflow python examples/input_convex.py [--epochs 20]`.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

import kconstraints as kc
from kconstraints.callbacks import EnforceConstraints

TOLERANCE = 1e-9  # float64 rounding of the check; the weights themselves are float32


def z_mask(z_units, x_units):
    """1 on the kernel rows fed by z (constrained), 0 on the rows fed by x (free)."""
    return np.concatenate([np.ones((z_units, 1)), np.zeros((x_units, 1))])


def build(input_dim=2, width=32, depth=3):
    x = keras.Input((input_dim,))
    z = keras.layers.Dense(width, activation="softplus", name="first")(x)  # free: affine in x
    for i in range(depth - 1):
        z = keras.layers.Dense(
            width,
            activation="softplus",
            kernel_constraint=kc.Partial(kc.NonNeg(), z_mask(width, input_dim)),
            name=f"hidden{i}",
        )(keras.layers.Concatenate()([z, x]))
    out = keras.layers.Dense(
        1, kernel_constraint=kc.Partial(kc.NonNeg(), z_mask(width, input_dim)), name="out"
    )(keras.layers.Concatenate()([z, x]))
    return keras.Model(x, out)


def forward(weights, x):
    """The network in float64 NumPy, from a list of (kernel, bias), to check it exactly."""
    (k, b), *rest = weights
    z = np.logaddexp(0.0, x @ k + b)  # softplus
    for i, (k, b) in enumerate(rest):
        v = np.concatenate([z, x], axis=-1) @ k + b
        z = v if i == len(rest) - 1 else np.logaddexp(0.0, v)
    return z[..., 0]


def worst_convexity_gap(model, input_dim, pairs=2000, seed=1):
    """max over random a, b, t of f(t a + (1-t) b) - (t f(a) + (1-t) f(b))."""
    weights = [
        tuple(np.asarray(keras.ops.convert_to_numpy(v), "float64") for v in layer.weights)
        for layer in model.layers
        if layer.weights
    ]
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-2, 2, size=(2, pairs, input_dim))
    t = rng.uniform(0, 1, size=(pairs, 1))
    mid = forward(weights, t * a + (1 - t) * b)
    chord = t[:, 0] * forward(weights, a) + (1 - t[:, 0]) * forward(weights, b)
    return float(np.max(mid - chord))


def main(epochs=20, samples=2048, input_dim=2, width=32, seed=0):
    keras.utils.set_random_seed(seed)
    model = build(input_dim, width)
    gap_initial = worst_convexity_gap(model, input_dim)  # glorot weights: some negative

    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(samples, input_dim)).astype("float32")
    # A convex target: a quadratic bowl plus a kink.
    y = (0.5 * np.sum(x**2, axis=1) + np.abs(x[:, 0]))[:, None].astype("float32")
    model.compile(keras.optimizers.Adam(0.01), "mse")
    history = model.fit(
        x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[EnforceConstraints()]
    )
    gap = worst_convexity_gap(model, input_dim)
    r = {
        "loss_first": history.history["loss"][0],
        "loss_last": history.history["loss"][-1],
        "gap_initial": gap_initial,
        "gap": gap,
        "violation": max(kc.violations(model).values()),
        "holds": gap <= TOLERANCE,
    }
    print(f"backend: {keras.backend.backend()}, loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}")
    print(f"worst f(t a + (1-t) b) - (t f(a) + (1-t) f(b)): initial weights {gap_initial:.3g}")
    print(f"                                        after training {gap:.3g} (convex: <= 0)")
    print(f"largest constraint violation after training: {r['violation']:.3g}")
    return r


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    sys.exit(0 if main(epochs=args.epochs)["holds"] else 1)
