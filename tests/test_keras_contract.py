"""The keras.constraints contract: Keras's own constraint tests, `get`, embeddings, saved files."""

import pathlib
import unittest

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.helpers import to_np
from tests.models import data

DATA = pathlib.Path(__file__).resolve().parent / "data"


def keras_constraint_tests():
    """Keras's own tests of keras.constraints (they ship with Keras), with kconstraints in its place."""
    from keras.src.constraints import constraints_test

    return constraints_test


KERAS_TESTS = keras_constraint_tests()
NAMES = unittest.TestLoader().getTestCaseNames(KERAS_TESTS.ConstraintsTest)


def test_keras_ships_its_constraint_tests():
    assert len(NAMES) >= 16, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_keras_constraint_test_passes_with_kconstraints(name, monkeypatch):
    monkeypatch.setattr(KERAS_TESTS, "constraints", kc)
    result = unittest.TestResult()
    KERAS_TESTS.ConstraintsTest(name).run(result)
    assert result.testsRun == 1
    assert result.wasSuccessful(), [text for _, text in result.errors + result.failures]


def test_the_base_constraint_is_the_identity():
    w = keras.ops.convert_to_tensor([[1.0, -2.0]])
    np.testing.assert_array_equal(to_np(kc.Constraint()(w)), [[1.0, -2.0]])


def clip_function(w):
    return keras.ops.clip(w, -1.0, 1.0)


@pytest.mark.parametrize(
    "identifier",
    [
        None,
        "max_norm",
        "MaxNorm",
        {"class_name": "MaxNorm", "config": {"max_value": 3.0}},
        kc.MaxNorm,
        kc.MaxNorm(3.0),
        clip_function,
    ],
    ids=["none", "alias", "name", "config", "class", "instance", "function"],
)
def test_get_returns_what_keras_get_returns(identifier):
    ours, theirs = kc.get(identifier), keras.constraints.get(_as_keras(identifier))
    if theirs is None or (callable(identifier) and not isinstance(identifier, type)):
        assert ours is (None if theirs is None else identifier)
        return
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == theirs.get_config()


def _as_keras(identifier):
    """The same identifier for keras.constraints.get: its own class instead of ours."""
    return keras.constraints.MaxNorm if identifier is kc.MaxNorm else identifier


def test_get_refuses_what_keras_refuses():
    for identifier in ("typo", 42):
        with pytest.raises(ValueError):
            keras.constraints.get(identifier)
        with pytest.raises(ValueError):
            kc.get(identifier)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
def test_an_embedding_constraint_holds_after_fit(jit_compile):
    """TensorFlow's Embedding gradient is sparse (IndexedSlices); the constraint still applies."""
    keras.utils.set_random_seed(0)
    embedding = keras.layers.Embedding(12, 4, embeddings_constraint=kc.MaxNorm(0.5, axis=1))
    model = keras.Sequential(
        [keras.Input((3,), dtype="int32"), embedding, keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    embedding.embeddings.assign(np.full((12, 4), 2.0, "float32"))  # every row outside
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit_compile)
    ids = np.random.default_rng(0).integers(0, 6, size=(32, 3)).astype("int32")
    model.fit(ids, data((1,))[1], batch_size=8, epochs=1, verbose=0)
    table = to_np(embedding.embeddings.value)
    assert np.all(np.linalg.norm(table, axis=1) <= 0.5 + 1e-6)
    # Rows never looked up get no gradient: only the projection moved them (norm 4 -> 0.5).
    np.testing.assert_allclose(table[6:], 0.25, rtol=1e-6)
    assert np.abs(table[:6] - 0.25).max() > 1e-3, "the looked-up rows were not trained"


@pytest.mark.parametrize("saved_on", ["jax", "tensorflow", "torch"])
def test_a_model_saved_on_any_backend_loads_on_this_one(saved_on):
    """Files written by tests/data/make_saved_models.py on each backend."""
    model = keras.saving.load_model(DATA / f"saved-{saved_on}.keras", safe_mode=True)
    kinds = {
        type(layer.kernel_constraint).__name__
        for layer in model.layers
        if hasattr(layer, "kernel_constraint")
    }
    assert kinds == {"MaxNorm", "Compose", "SpectralNorm", "Partial"}
    assert isinstance(model.layers[3].kernel_regularizer, kc.Penalty)
    assert max(kc.violations(model).values()) <= 1e-6
    want = np.load(DATA / f"saved-{saved_on}-output.npy")
    x = np.random.default_rng(1).normal(size=(5, 6, 2)).astype("float32")
    np.testing.assert_allclose(to_np(model(x)), want, rtol=1e-5, atol=1e-6)
