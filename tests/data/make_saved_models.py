"""Write `saved-<backend>.keras` and its expected outputs: a model saved on this backend.

tests/test_keras_contract.py loads the files of all three backends on each
backend. Run once per backend to regenerate them:

    KERAS_BACKEND=jax python tests/data/make_saved_models.py   # and tensorflow, torch
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np

import kconstraints as kc

HERE = pathlib.Path(__file__).resolve().parent


def build():
    """Dense and Conv1D layers carrying constraints of every module, and a Penalty."""
    inputs = keras.Input((6, 2))
    x = keras.layers.Conv1D(
        3, 3, kernel_constraint=kc.MaxNorm(1.0, axis=[0, 1]), bias_constraint=kc.NonNeg()
    )(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        4,
        kernel_constraint=kc.Compose([kc.Mask(np.tril(np.ones((12, 4)))), kc.MaxNorm(1.0)]),
        bias_constraint=kc.Clip([-1.0, 0.0, 0.0, -0.5], 0.5),
        kernel_regularizer=kc.Penalty(kc.L1Ball(1.0), strength=0.1),
    )(x)
    x = keras.layers.Dense(
        4, kernel_constraint=kc.SpectralNorm(0.9, method="gram"), bias_constraint=kc.Monotonic()
    )(x)
    outputs = keras.layers.Dense(
        1, kernel_constraint=kc.Partial(kc.NonNeg(), [[1], [1], [0], [0]])
    )(x)
    return keras.Model(inputs, outputs)


def example_input():
    return np.random.default_rng(1).normal(size=(5, 6, 2)).astype("float32")


def main():
    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = build()
    kc.project(model)
    model.save(HERE / f"saved-{backend}.keras")
    out = keras.ops.convert_to_numpy(model(example_input()))
    np.save(HERE / f"saved-{backend}-output.npy", out)
    print(f"{backend}: wrote saved-{backend}.keras")


if __name__ == "__main__":
    main()
