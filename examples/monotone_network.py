"""A network monotone in chosen inputs: L1-bounded kernel rows plus a residual, checked after training.

The question, as users of MonotonicNetworks ask it in Keras: "my model must
be non-decreasing in some inputs (a price in a demand model, a dose, a
credit score), whatever it learns from noisy data. `kc.Monotonic` looked
right, but it orders a weight's entries, not the model's output."

The answer, the construction of Kitouni, Nolte and Williams (2023,
"Expressive Monotonic Neural Networks", ICLR, arXiv:2307.07512): take a
network `g` that is `lam`-Lipschitz in the L1 norm of its input and add a
residual, `f(x) = g(x) + lam * sum(x[i] for i in S)`. Then
`|df/dx_i - lam| = |dg/dx_i| <= lam`, so `df/dx_i >= 0` for every `i` in `S`.
A Dense layer `y = x W` with a kernel of shape `(inputs, units)` is
`c`-Lipschitz from L1 to L1 when every row of `W` (the weights out of one
input) has an L1 norm of at most `c`: `||x W||_1 <= sum_j |x_j| ||W_j||_1`.
`kc.L1Ball(c, axis=1)` is exactly that set, so each layer gets it with
`c = lam ** (1 / depth)`; ReLU is 1-Lipschitz entry by entry, in any norm.
The residual is a frozen `Dense(1)` whose kernel is `lam` on the inputs of
`S` and 0 elsewhere, so the model is plain Keras and saves and loads in safe
mode.

After training on a noisy target, the script checks monotonicity in float64
NumPy from the trained weights: for random points and steps `h > 0` along
each input of `S`, `f(x + h e_i) - f(x) >= 0` up to rounding. It reports the
worst decrease for the constrained network and for the same network trained
without constraints, and exits with status 1 if the constrained one is not
monotone.

Run: `KERAS_BACKEND=jax python examples/monotone_network.py [--epochs 30]`.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

import kconstraints as kc

MONOTONE = (0, 1)  # the inputs f must be non-decreasing in
LAM = 2.0  # the L1 Lipschitz bound of g, and the residual's slope
TOLERANCE = 1e-9  # float64 rounding of the check; the weights themselves are float32


def build(input_dim=3, width=32, depth=3, lam=LAM, constrained=True):
    per_layer = lam ** (1.0 / depth)
    constraint = kc.L1Ball(per_layer, axis=1) if constrained else None
    x = keras.Input((input_dim,))
    g = x
    for i in range(depth):
        last = i == depth - 1
        g = keras.layers.Dense(
            1 if last else width,
            activation=None if last else "relu",
            kernel_constraint=constraint,
            name=f"g{i}",
        )(g)
    slope = np.zeros((input_dim, 1), "float32")
    slope[list(MONOTONE)] = lam
    residual = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(slope),
        trainable=False,
        name="residual",
    )(x)
    return keras.Model(x, keras.layers.Add()([g, residual]))


def forward(model, x):
    """The network in float64 NumPy from its weights, to check it exactly."""
    g = x
    depth = sum(layer.name.startswith("g") for layer in model.layers)
    for i in range(depth):
        kernel, bias = (
            np.asarray(keras.ops.convert_to_numpy(v), "float64")
            for v in model.get_layer(f"g{i}").weights
        )
        g = g @ kernel + bias
        if i < depth - 1:
            g = np.maximum(g, 0.0)
    (slope,) = (
        np.asarray(keras.ops.convert_to_numpy(v), "float64")
        for v in model.get_layer("residual").weights
    )
    return (g + x @ slope)[:, 0]


def worst_decrease(model, input_dim, points=2000, seed=1):
    """min over random x, h > 0 and i in MONOTONE of f(x + h e_i) - f(x): >= 0 when monotone."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(points, input_dim))
    h = rng.uniform(1e-3, 0.5, size=points)
    worst = np.inf
    for i in MONOTONE:
        step = np.zeros_like(x)
        step[:, i] = h
        worst = min(worst, float(np.min(forward(model, x + step) - forward(model, x))))
    return worst


def lipschitz_l1(model):
    """The product of the kernels' L1-to-L1 norms (largest row L1 norm): a bound on g's constant."""
    bound = 1.0
    for layer in model.layers:
        if layer.name.startswith("g"):
            kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel.value), "float64")
            bound *= float(np.abs(kernel).sum(axis=1).max())
    return bound


def data(samples, input_dim, seed):
    """Increasing in x0 and x1, not in x2, with noise an unconstrained fit follows."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(samples, input_dim)).astype("float32")
    y = x[:, 0] + 0.5 * np.tanh(3 * x[:, 1]) + 0.5 * np.sin(3 * x[:, 2])
    y = y + rng.normal(scale=0.3, size=samples)
    return x, y[:, None].astype("float32")


def train(model, x, y, epochs):
    model.compile(keras.optimizers.Adam(0.01), "mse")
    kc.project(model)  # Keras never projects the initial weights
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return history.history["loss"]


def main(epochs=30, samples=2048, input_dim=3, width=32, seed=0):
    x, y = data(samples, input_dim, seed)
    keras.utils.set_random_seed(seed)
    model = build(input_dim, width)
    loss = train(model, x, y, epochs)
    keras.utils.set_random_seed(seed)
    free = build(input_dim, width, constrained=False)
    free_loss = train(free, x, y, epochs)
    r = {
        "loss_first": loss[0],
        "loss_last": loss[-1],
        "free_loss_last": free_loss[-1],
        "worst_decrease": worst_decrease(model, input_dim),
        "free_worst_decrease": worst_decrease(free, input_dim),
        "lipschitz_l1": lipschitz_l1(model),
        "violation": max(kc.violations(model).values()),
    }
    r["holds"] = r["worst_decrease"] >= -TOLERANCE
    print(f"backend: {keras.backend.backend()}, loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}")
    print(f"L1 Lipschitz bound of g: {r['lipschitz_l1']:.6f} (at most {LAM})")
    print(f"worst f(x + h e_i) - f(x), i in {MONOTONE}, h > 0:")
    print(f"  constrained   {r['worst_decrease']:.3g} (monotone: >= 0), loss {r['loss_last']:.4f}")
    print(f"  unconstrained {r['free_worst_decrease']:.3g}, loss {r['free_loss_last']:.4f}")
    return r


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    sys.exit(0 if main(epochs=args.epochs)["holds"] else 1)
