"""The main job: train a small model with every kind of constraint, then show each holds.

Runs on whatever backend KERAS_BACKEND names (`nox -s demo` uses Keras's
default, TensorFlow, unless KERAS_BACKEND is set). It trains a Dense model whose
kernels carry the library's constraints, with a compiled train step, starting
from weights that violate them, and prints for each constraint the largest
entry of |w - P(w)| (`kc.violations`) before and after training. It exits
with status 1 if any is violated.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

import kconstraints as kc

# (name, constraint, units): one Dense layer per constraint, chained.
CONSTRAINTS = [
    ("NonNeg", kc.NonNeg(), 16),
    ("Clip(-0.05, 0.05)", kc.Clip(-0.05, 0.05), 16),
    ("MaxNorm(1.0)", kc.MaxNorm(1.0), 16),
    ("MinMaxNorm(0.5, 1.0)", kc.MinMaxNorm(0.5, 1.0), 16),
    ("UnitNorm()", kc.UnitNorm(), 16),
    ("CenterAround(0.0)", kc.CenterAround(0.0, axis=0), 16),
    ("Simplex(axis=0)", kc.Simplex(axis=0), 16),
    ("L1Ball(2.0)", kc.L1Ball(2.0), 16),
    ("Monotonic(axis=0)", kc.Monotonic(axis=0), 16),
    ("SpectralNorm(1.0)", kc.SpectralNorm(1.0), 16),
    ("Orthogonal()", kc.Orthogonal(), 16),
    ("Mask(lower triangle)", kc.Mask(np.tril(np.ones((16, 16)))), 16),
    (
        "Partial(NonNeg, 8 rows)",
        kc.Partial(kc.NonNeg(), np.r_[np.ones(8), np.zeros(8)][:, None]),
        16,
    ),
]


def build(input_dim=8):
    inputs = keras.Input((input_dim,))
    x = inputs
    for _, constraint, units in CONSTRAINTS:
        x = keras.layers.Dense(units, activation="tanh", kernel_constraint=constraint)(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def main(epochs=3, samples=512, jit_compile=True):
    keras.utils.set_random_seed(0)
    model = build()
    layers = [layer for layer in model.layers if getattr(layer, "kernel_constraint", None)]
    rng = np.random.default_rng(0)
    for layer in layers:  # start outside every set: initial weights are never projected
        layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32") * 2)
    before = kc.violations(model)  # {variable.path: max |w - P(w)|}

    x = rng.normal(size=(samples, 8)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)

    print(
        f"backend: {keras.backend.backend()}, loss {history.history['loss'][0]:.4f} -> "
        f"{history.history['loss'][-1]:.4f}"
    )
    print(f"{'constraint':<24}{'violation before':>18}{'after':>12}  holds")
    after = kc.violations(model)
    ok = True
    for (name, _, _), layer in zip(CONSTRAINTS, layers, strict=True):
        path = layer.kernel.path
        holds = after[path] <= 1e-5
        ok &= holds
        print(f"{name:<24}{before[path]:>18.3g}{after[path]:>12.3g}  {'yes' if holds else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
