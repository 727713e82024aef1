"""A WGAN on a 2-D toy distribution, its critic's weights clipped with `Clip(-c, c)`.

The question, as Keras users ask it: "WGAN (Arjovsky et al. 2017,
arXiv:1701.07875, Algorithm 1) clips every critic weight to [-c, c] after
each update. How do I do that in Keras? The optimizer's `clipvalue` does not
seem to be it."

The answer: give every critic weight `kernel_constraint=Clip(-c, c)` and
`bias_constraint=Clip(-c, c)`; the optimizer projects them after each of
its steps, inside the compiled train step, on any backend. `clipvalue=c` is
another thing: it clips the *gradients* before the step, so it bounds how far
one step moves a weight, not where the weight is. The script trains the same
WGAN twice, once with weight clipping and once with only gradient clipping,
and prints the largest critic weight of each: the first stays within c, the
second does not (it starts outside, and nothing brings it back).

The data: a Gaussian blob centred at (2, 1). The generator maps noise to
2-D points; the script prints how far the generated mean is from the real
mean before and after training. It exits with status 1 if a clipped critic
weight leaves [-c, c] or the generator did not move towards the data.

Run: `KERAS_BACKEND=torch python examples/wgan_clipping.py [--iterations 200]`.
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np

import kconstraints as kc

CLIP = 0.01  # c of the paper
CENTRE = np.array([2.0, 1.0], dtype="float32")
NOISE_DIM = 4


def wasserstein(y_true, y_pred):
    """With labels -1 (real) and +1 (fake), minimising this maximises D(real) - D(fake)."""
    return keras.ops.mean(y_true * y_pred)


def build(weight_clip):
    constraint = kc.Clip(-CLIP, CLIP) if weight_clip else None
    critic = keras.Sequential(
        [keras.Input((2,))]
        + [
            keras.layers.Dense(
                units,
                activation=activation,
                kernel_constraint=constraint,
                bias_constraint=constraint,
            )
            for units, activation in [(32, "relu"), (32, "relu"), (1, None)]
        ],
        name="critic",
    )
    generator = keras.Sequential(
        [
            keras.Input((NOISE_DIM,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(2),
        ],
        name="generator",
    )
    # The paper's optimizer is RMSProp; its rate 5e-5 is for images, a toy can go faster.
    grad_clip = {} if weight_clip else {"clipvalue": CLIP}
    critic.compile(keras.optimizers.RMSprop(1e-3, **grad_clip), wasserstein)
    critic.trainable = False  # inside `gan`, only the generator learns
    gan = keras.Sequential([generator, critic])
    gan.compile(keras.optimizers.RMSprop(5e-3), wasserstein)
    if weight_clip:
        kc.project(critic)  # initial weights are never projected by the optimizer
    return critic, generator, gan


def train(weight_clip, iterations, batch, n_critic, rng):
    critic, generator, gan = build(weight_clip)
    real_label, fake_label = -np.ones((batch, 1), "float32"), np.ones((batch, 1), "float32")

    def noise():
        return rng.normal(size=(batch, NOISE_DIM)).astype("float32")

    def gap():
        fake = keras.ops.convert_to_numpy(generator(rng.normal(size=(512, NOISE_DIM))))
        return float(np.linalg.norm(fake.mean(axis=0) - CENTRE))

    before = gap()
    for _ in range(iterations):
        critic.trainable = True
        for _ in range(n_critic):
            real = (CENTRE + 0.1 * rng.normal(size=(batch, 2))).astype("float32")
            fake = keras.ops.convert_to_numpy(generator(noise()))
            critic.train_on_batch(
                np.concatenate([real, fake]), np.concatenate([real_label, fake_label])
            )
        critic.trainable = False
        gan.train_on_batch(noise(), real_label)  # the generator wants D(G(z)) large
    largest = max(float(np.max(np.abs(keras.ops.convert_to_numpy(v)))) for v in critic.weights)
    return {"gap_before": before, "gap_after": gap(), "largest_critic_weight": largest}


def main(iterations=200, batch=64, n_critic=5, seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    clipped = train(True, iterations, batch, n_critic, rng)
    gradient_only = train(False, iterations, batch, n_critic, rng)
    print(f"backend: {keras.backend.backend()}, c = {CLIP}")
    print(f"{'critic':<28}{'largest |w|':>12}{'|mean gap| before':>20}{'after':>8}")
    for name, r in [
        ("Clip(-c, c) on weights", clipped),
        ("clipvalue=c on gradients", gradient_only),
    ]:
        print(
            f"{name:<28}{r['largest_critic_weight']:>12.4f}"
            f"{r['gap_before']:>20.3f}{r['gap_after']:>8.3f}"
        )
    clipped["holds"] = clipped["largest_critic_weight"] <= np.float32(CLIP)
    clipped["learned"] = clipped["gap_after"] < clipped["gap_before"]
    return {"clipped": clipped, "gradient_only": gradient_only}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    r = main(iterations=args.iterations)["clipped"]
    sys.exit(0 if r["holds"] and r["learned"] else 1)
