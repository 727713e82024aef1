"""get / serialize / deserialize, and constraints inside a saved `.keras` model."""

import json

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints._registry import NAMES as REGISTRY
from tests.helpers import sample, tensor, to_np
from tests.models import data, every_kind_model


@pytest.mark.parametrize(
    "identifier, cls",
    [
        ("max_norm", kc.MaxNorm),
        ("MaxNorm", kc.MaxNorm),
        ("non_neg", kc.NonNeg),
        ("unit_norm", kc.UnitNorm),
        ("min_max_norm", kc.MinMaxNorm),
        ("center_around", kc.CenterAround),
    ],
)
def test_get_by_name_and_alias(identifier, cls):
    assert type(kc.get(identifier)) is cls


def test_get_passes_instances_and_none_through():
    c = kc.MaxNorm(3.0)
    assert kc.get(c) is c
    assert kc.get(None) is None


def test_get_rebuilds_a_config_dict():
    c = kc.get({"class_name": "MaxNorm", "config": {"max_value": 3.0, "axis": [0, 1]}})
    assert isinstance(c, kc.MaxNorm) and c.max_value == 3.0 and c.axis == [0, 1]


def test_get_unknown_identifier_is_named():
    with pytest.raises(ValueError, match="'no_such_thing'"):
        kc.get("no_such_thing")
    with pytest.raises(ValueError, match="42"):
        kc.get(42)


def test_every_public_constraint_is_registered():
    public = [getattr(kc, n) for n in kc.__all__]
    classes = [c for c in public if isinstance(c, type) and issubclass(c, kc.Constraint)]
    for cls in classes:
        if cls is kc.Constraint:
            continue
        assert REGISTRY[cls.__name__] is cls
        assert keras.saving.get_registered_name(cls) == f"kconstraints>{cls.__name__}"


def test_serialize_round_trips_through_json():
    c = kc.Clip(np.array([[-1.0, -2.0]]), 3.0)
    config = json.loads(json.dumps(kc.serialize(c)))
    assert config["registered_name"] == "kconstraints>Clip"
    clone = kc.deserialize(config)
    w = tensor(sample((4, 2)) * 5)
    np.testing.assert_array_equal(to_np(clone(w)), to_np(c(w)))


def test_deserialize_prefers_ours_over_keras_twin():
    assert type(kc.deserialize({"class_name": "MaxNorm", "config": {}})) is kc.MaxNorm
    assert (
        type(kc.deserialize(keras.saving.serialize_keras_object(keras.constraints.MaxNorm())))
        is keras.constraints.MaxNorm
    )


def test_saved_model_loads_in_safe_mode_without_custom_objects(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                4, kernel_constraint=kc.MaxNorm(1.5, axis=[0]), bias_constraint=kc.Clip(-0.5, 0.5)
            ),
            keras.layers.Dense(
                3,
                kernel_constraint=kc.MinMaxNorm(0.1, 0.9, rate=0.5),
                bias_constraint=kc.CenterAround(0.2),
            ),
            keras.layers.Dense(
                2, kernel_constraint=kc.UnitNorm(axis=-1), bias_constraint=kc.NonNeg()
            ),
        ]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        for attr in ("kernel_constraint", "bias_constraint"):
            ca, cb = getattr(a, attr), getattr(b, attr)
            assert type(cb) is type(ca)
            assert cb.get_config() == ca.get_config()
    x = data((5,), seed=8)[0]
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=1e-6, atol=1e-6)


def test_saved_model_with_every_kind_of_constraint_loads_in_safe_mode(tmp_path):
    model = every_kind_model()
    path = tmp_path / "every_kind.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    attrs = ("kernel_constraint", "bias_constraint", "kernel_regularizer")
    checked = 0
    for a, b in zip(model.layers, loaded.layers, strict=True):
        for attr in attrs:
            ca, cb = getattr(a, attr, None), getattr(b, attr, None)
            assert type(cb) is type(ca), (a.name, attr)
            if ca is not None:
                assert cb.get_config() == ca.get_config()
                checked += 1
    assert checked == 15  # every constraint and the penalty of tests.models.every_kind_model
    x = data((6,), seed=7)[0]
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=1e-6, atol=1e-6)
