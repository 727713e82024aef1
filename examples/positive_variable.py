"""A custom layer's own `add_weight` variable kept non-negative: by projection, or by a penalty.

The question, as Keras users ask it: "I created a variable with `add_weight`
in a custom layer and want it to take only positive values. Keras
constraints seem to be for `kernel_constraint` and `bias_constraint` only.
And clipping after the step hides the constraint from the gradient: is a
penalty in the loss the better way?"

The answer: both work, and they are different things.

- Hard: `add_weight(..., constraint=NonNeg())`. Any variable takes a
  constraint; the optimizer projects it after each step, so it is >= 0
  after every step, exactly. Entries the data would push below zero sit
  at exactly 0, on the boundary.
- Soft: `add_weight(..., regularizer=Penalty(NonNeg(), strength))`. The
  loss gains `strength * sum(min(w, 0)^2)`, the squared distance to the
  set, so the gradient sees the constraint; the variable may go below zero
  where the data pays for it, by less as `strength` grows.

For a standalone variable outside any layer, `keras.Variable(...,
constraint=...)` silently drops the constraint: use
`kconstraints.Variable(...)` or `kconstraints.constrain(variable, ...)`.

The script fits `y = x * s` for a target `s` with two negative entries,
three times: unconstrained, projected, penalised, and prints the learned
`s`. Projected, the negative entries end at exactly 0; penalised, near
`t / (1 + 4 strength)` (the data term is a mean over 4 outputs). It exits
with status 1 if the projected variable has a negative entry.

Run: `KERAS_BACKEND=jax python examples/positive_variable.py [--epochs 20]`.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

import kconstraints as kc
from kconstraints.callbacks import EnforceConstraints

TARGET = np.array([1.5, 0.5, -0.5, -1.0], dtype="float32")


class Scale(keras.layers.Layer):
    """`x * scale`, with one learned scale per feature."""

    def __init__(self, constraint=None, regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.constraint = constraint
        self.regularizer = regularizer

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],),
            initializer="ones",
            constraint=self.constraint,
            regularizer=self.regularizer,
            name="scale",
        )

    def call(self, x):
        return x * self.scale


def fit(layer, x, y, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((x.shape[1],)), layer])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[EnforceConstraints()])
    return np.asarray(keras.ops.convert_to_numpy(layer.scale), "float64")


def main(epochs=20, samples=1024, strength=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, TARGET.size)).astype("float32")
    y = x * TARGET
    r = {
        "free": fit(Scale(), x, y, epochs, seed),
        "projected": fit(Scale(constraint=kc.NonNeg()), x, y, epochs, seed),
        "penalised": fit(Scale(regularizer=kc.Penalty(kc.NonNeg(), strength)), x, y, epochs, seed),
    }
    print(f"backend: {keras.backend.backend()}; target s = {TARGET.tolist()}")
    for name, s in r.items():
        print(f"{name:<10} s = {s.round(3).tolist()}")
    r["holds"] = bool(np.all(r["projected"] >= 0))
    return r


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--strength", type=float, default=1.0)
    args = parser.parse_args()
    sys.exit(0 if main(epochs=args.epochs, strength=args.strength)["holds"] else 1)
