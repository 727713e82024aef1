"""A fixed connectivity with `Mask`, and frozen entries with `Fixed`, unchanged by training.

The question, as Keras users ask it: "In the first Dense layer I want some
weights to be a constant (zero) that training never changes. Putting a
`tf.constant(0)` into `set_weights` does not stop its gradient. How do I hold
some entries of a kernel, not the whole layer, at a constant?"

The answer: a constraint. `Mask(mask)` holds the entries where `mask` is 0
at exactly 0, a fixed sparsity pattern (here: each hidden unit sees only
its own block of inputs); `Fixed(mask, values)` holds the entries where
`mask` is 1 at the given values (here: the question's zero, and one entry
frozen at 0.25) and leaves the rest free. The gradient of a frozen entry is
not zero, the optimizer does step it, and the projection after the step
puts it back, exactly, on every backend. (To also make its gradient zero,
multiply the kernel by the mask in the layer's `call`; the constraint is
still what keeps the stored weight exact.) `EnforceConstraints` applies both
to the initial weights, which Keras never projects.

After training, the script compares the kernels with the values they must
have, for exact equality, and checks that the free entries did train. It
exits with status 1 if a masked or frozen entry moved.

Run: `KERAS_BACKEND=jax python examples/fixed_connectivity.py [--epochs 10]`.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

import kconstraints as kc
from kconstraints.callbacks import EnforceConstraints

INPUTS, HIDDEN = 8, 4
# Block connectivity: hidden unit j sees inputs 2j and 2j+1 only.
BLOCKS = np.kron(np.eye(HIDDEN), np.ones((INPUTS // HIDDEN, 1)))
# The question's layer: a 2 x 2 kernel whose entry (0, 0) is a constant 0;
# we also freeze (1, 1) at 0.25.
FROZEN = np.array([[1, 0], [0, 1]])
FROZEN_VALUES = np.array([[0.0, 0.0], [0.0, 0.25]])


def build():
    return keras.Sequential(
        [
            keras.Input((INPUTS,)),
            keras.layers.Dense(
                HIDDEN, activation="tanh", kernel_constraint=kc.Mask(BLOCKS), name="blocks"
            ),
            keras.layers.Dense(2, activation="sigmoid", name="dense"),
            keras.layers.Dense(
                2,
                activation="sigmoid",
                kernel_constraint=kc.Fixed(FROZEN, FROZEN_VALUES),
                name="frozen",
            ),
        ]
    )


def main(epochs=10, samples=1024, seed=0):
    keras.utils.set_random_seed(seed)
    model = build()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, INPUTS)).astype("float32")
    y = (rng.uniform(size=(samples, 2)) < 0.5).astype("float32")
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    kernels = {layer.name: layer.kernel for layer in model.layers}
    start = {name: keras.ops.convert_to_numpy(kernel) for name, kernel in kernels.items()}
    enforce = EnforceConstraints()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[enforce])
    blocks, frozen = (
        np.asarray(keras.ops.convert_to_numpy(kernels[n])) for n in ("blocks", "frozen")
    )
    moved = {
        n: np.asarray(keras.ops.convert_to_numpy(kernels[n])) != start[n]
        for n in ("blocks", "frozen")
    }
    r = {
        "masked_exact": bool(np.all(blocks[BLOCKS == 0] == 0)),
        "frozen_exact": bool(
            np.all(frozen[FROZEN == 1] == FROZEN_VALUES[FROZEN == 1].astype("float32"))
        ),
        "free_trained": bool(
            np.all(moved["blocks"][BLOCKS == 1]) and np.all(moved["frozen"][FROZEN == 0])
        ),
        "violation_at_start": enforce.violation_at_begin,
    }
    r["holds"] = r["masked_exact"] and r["frozen_exact"]
    print(f"backend: {keras.backend.backend()}")
    print(
        f"masked entries exactly 0: {r['masked_exact']}; frozen entries exact: {r['frozen_exact']}"
    )
    print(f"'blocks' kernel after training (0 off the blocks):\n{blocks.round(3)}")
    print(f"'frozen' kernel after training (0 and 0.25 on the diagonal):\n{frozen.round(3)}")
    return r


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    sys.exit(0 if main(epochs=args.epochs)["holds"] else 1)
