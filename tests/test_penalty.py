"""penalty.py: Penalty, the squared distance to a constraint's set as a regularizer."""

import json

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled, gradient
from tests.helpers import dtype_of, sample, tensor, to_np
from tests.references import max_norm_ref, monotonic_ref, simplex_ref

MASK = sample((6, 4), "ties", seed=70) > 0

# (constraint, its float64 NumPy projection)
PENALIZED = [
    (kc.NonNeg(), lambda w: np.maximum(w, 0)),
    (kc.MaxNorm(1.0), max_norm_ref(1.0, 0)),
    (kc.Simplex(axis=0), simplex_ref(1.0, 0)),
    (kc.Monotonic(), monotonic_ref(0)),
    (kc.Partial(kc.NonNeg(), MASK), lambda w: np.where(MASK, np.maximum(w, 0), w)),
]
IDS = [type(c).__name__ for c, _ in PENALIZED]


@pytest.mark.parametrize("constraint, ref", PENALIZED, ids=IDS)
def test_value_is_strength_times_squared_distance(constraint, ref):
    w = sample((6, 4), "normal", seed=71)
    with float64_enabled():
        got = float(to_np(kc.Penalty(constraint, strength=0.3)(tensor(w, "float64"))))
    np.testing.assert_allclose(got, 0.3 * np.sum((w - ref(w)) ** 2), rtol=1e-12)


@pytest.mark.parametrize("constraint, ref", PENALIZED, ids=IDS)
def test_gradient_is_twice_strength_times_the_gap(constraint, ref):
    w = sample((6, 4), "normal", seed=72)
    with float64_enabled():
        grad = to_np(gradient(kc.Penalty(constraint, strength=0.3), tensor(w, "float64")))
    np.testing.assert_allclose(grad, 0.6 * (w - ref(w)), rtol=0, atol=1e-12)
    assert np.abs(grad).max() > 0.1


def test_zero_inside_the_set_and_float32_for_half_weights():
    inside = tensor(np.abs(sample((4, 3), "normal", seed=73)), "float16")
    value = kc.Penalty(kc.NonNeg())(inside)
    assert dtype_of(value) == "float32" and float(to_np(value)) == 0.0


def test_as_kernel_regularizer_it_adds_the_loss_and_pulls_weights_into_the_set():
    keras.utils.set_random_seed(7)
    penalty = kc.Penalty(kc.NonNeg(), strength=1.0)
    layer = keras.layers.Dense(3, kernel_regularizer=penalty)
    model = keras.Sequential([keras.Input((5,)), layer])
    layer.kernel.assign(sample((5, 3), "normal", seed=74).astype("float32"))
    model(np.zeros((1, 5), "float32"))
    np.testing.assert_allclose(to_np(model.losses[0]), to_np(penalty(layer.kernel.value)))
    before = float(to_np(penalty(layer.kernel.value)))
    # Zero inputs and targets: the data loss is flat, only the penalty moves the kernel.
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(np.zeros((16, 5), "float32"), np.zeros((16, 3), "float32"), epochs=2, verbose=0)
    after = float(to_np(penalty(layer.kernel.value)))
    assert after < 0.5 * before, (before, after)


def test_round_trips_through_kconstraints_and_keras_serialization():
    penalty = kc.Penalty(kc.Compose([kc.Mask(MASK), kc.L1Ball(2.0)]), strength=0.25)
    config = json.loads(json.dumps(kc.serialize(penalty)))
    assert config["registered_name"] == "kconstraints>Penalty"
    for clone in (kc.deserialize(config), keras.regularizers.get(config)):
        assert type(clone) is kc.Penalty
        assert clone.get_config() == penalty.get_config()
        w = tensor(sample((6, 4), "normal", seed=75))
        assert float(to_np(clone(w))) == float(to_np(penalty(w)))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Penalty(kc.NonNeg(), strength=-1.0), "Penalty.*strength.*-1"),
        (lambda: kc.Penalty(kc.NonNeg(), strength="big"), "Penalty.*strength"),
        (lambda: kc.Penalty(42), "42"),
        (lambda: kc.Penalty("no_such"), "no_such"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()
