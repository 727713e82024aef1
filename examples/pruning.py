"""Magnitude pruning and 2:4 sparsity of a Keras 3 MLP on any backend, with the accuracy it costs.

The user question: "TensorFlow Model Optimization's pruning API does not
work with Keras 3. How do I prune a Keras 3 model, on JAX, TensorFlow or
PyTorch, and what does each level of sparsity cost in accuracy?"

The answer: magnitude pruning is a projection. `kc.TopK(density=d)` as a
kernel constraint keeps the `d` fraction of the kernel's entries of largest
magnitude after every optimizer step, and `callbacks.SparsitySchedule`
raises the sparsity from 0 to its target over the middle third of training
(Zhu & Gupta's polynomial schedule, as tfmot's `PolynomialDecay`), leaving
the last third to fine-tune the weights that remain. `kc.NM(2, 4)` keeps 2
of every 4 consecutive input weights of each unit: the 2:4 pattern of sparse
tensor cores, 50% sparse.

The task is scikit-learn's bundled digits (8 x 8 images, 10 classes, no
download): an MLP 64-128-128-10, every kernel constrained, trained with
Adam. For each target sparsity it reports the test accuracy with the
gradual schedule and with the final sparsity imposed from the first step
(`TopK` without a schedule), each the mean over `seeds` (one by default),
and the measured fraction of zero kernel entries. It checks that every pruned kernel keeps
exactly its count of nonzeros and every 2:4 group at most 2, and exits with
status 1 if not.

Run: `KERAS_BACKEND=jax python examples/pruning.py [--epochs 30]`.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np
from sklearn.datasets import load_digits

import kconstraints as kc
from kconstraints.callbacks import SparsitySchedule


def digits(seed=0, test_fraction=1 / 3):
    """The digits split once into train and test; pixels scaled to [0, 1]."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = (x[order] / 16.0).astype("float32"), y[order].astype("int32")
    cut = int(len(y) * (1 - test_fraction))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def build(constraint, width=128):
    """The MLP with `constraint()` (a fresh one per kernel) on every kernel."""
    layers = [keras.Input((64,))]
    for units in (width, width):
        layers.append(keras.layers.Dense(units, activation="relu", kernel_constraint=constraint()))
    layers.append(keras.layers.Dense(10, kernel_constraint=constraint()))
    return keras.Sequential(layers)


def kernels(model):
    return [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers]


def train(model, data, epochs, batch_size, callbacks=(), jit_compile="auto"):
    """Fit on the train split; return the test accuracy."""
    (x, y), (x_test, y_test) = data
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    kc.project(model)  # the initial weights are never projected by the optimizer
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return float(model.evaluate(x_test, y_test, verbose=0)[1])


def zeros(model):
    """The fraction of zero entries over all kernels."""
    ks = kernels(model)
    return sum(int((k == 0).sum()) for k in ks) / sum(k.size for k in ks)


def top_k_exact(model, density):
    """Every kernel keeps exactly its TopK count of nonzeros."""
    return all(
        np.count_nonzero(k) == kc.TopK(density=density).count(k.shape) for k in kernels(model)
    )


def two_four_exact(model):
    """At most 2 nonzeros in every group of 4 consecutive inputs of every unit."""
    return all(
        np.count_nonzero(k.reshape(-1, 4, k.shape[1]), axis=1).max() <= 2 for k in kernels(model)
    )


def main(
    sparsities=(0.5, 0.8, 0.9, 0.95),
    epochs=30,
    seeds=(0,),
    changes=6,
    width=128,
    batch_size=64,
    jit_compile="auto",
):
    data = digits()
    steps = -(-len(data[0][1]) // batch_size) * epochs
    results = {"backend": keras.backend.backend(), "rows": [], "holds": True}

    def run(constraint, check, callbacks=()):
        """Mean test accuracy and fraction of zeros over the seeds; `check` each model."""
        accuracies, sparsity = [], []
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            model = build(constraint, width)
            fresh = [make() for make in callbacks]
            accuracies.append(train(model, data, epochs, batch_size, fresh, jit_compile))
            sparsity.append(zeros(model))
            results["holds"] &= bool(check(model))
        return float(np.mean(accuracies)), float(np.mean(sparsity))

    results["dense"], _ = run(lambda: None, lambda model: True)
    begin, end = steps // 3, 2 * steps // 3
    for target in sparsities:
        density = 1.0 - target

        def schedule(target=target):
            # Each change of the sparsity recompiles the train step once.
            frequency = max(1, (end - begin) // changes)
            return SparsitySchedule(0.0, target, begin, end, frequency=frequency)

        def exact(model, density=density):
            return top_k_exact(model, density)

        gradual, measured = run(lambda: kc.TopK(density=1.0), exact, [schedule])
        fixed, _ = run(lambda density=density: kc.TopK(density=density), exact)
        results["rows"].append(
            {"target": target, "sparsity": measured, "gradual": gradual, "from_start": fixed}
        )
    two_four, measured = run(lambda: kc.NM(2, 4), two_four_exact)
    results["two_four"] = {"sparsity": measured, "accuracy": two_four}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    r = main(epochs=args.epochs)
    print(f"backend: {r['backend']}; test accuracy (dense: {r['dense']:.3f})")
    print("| target sparsity | measured | gradual schedule | from the first step |")
    print("| --- | --- | --- | --- |")
    for row in r["rows"]:
        print(
            f"| {row['target']:.2f} | {row['sparsity']:.3f} | {row['gradual']:.3f} "
            f"| {row['from_start']:.3f} |"
        )
    two_four = r["two_four"]
    print(f"| 2:4 (NM) | {two_four['sparsity']:.3f} | {two_four['accuracy']:.3f} | |")
    print("every kernel in its set" if r["holds"] else "a kernel left its set")
    sys.exit(0 if r["holds"] else 1)
