"""Each background example runs on this backend at a small size and shows what it claims."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import kconstraints as kc

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_positive_variable_by_projection_and_by_penalty():
    r = example("positive_variable").main(epochs=12, samples=256)
    assert r["holds"]
    assert r["free"][2:].max() < -0.1, "the constraint must bind"
    np.testing.assert_array_equal(r["projected"][2:], 0.0)  # on the boundary, exactly
    assert np.all(r["penalised"][2:] < 0), "a penalty is soft"
    assert np.all(r["penalised"][2:] > r["free"][2:]), "but it pulls towards the set"


def test_wgan_weight_clipping_versus_gradient_clipping():
    wgan = example("wgan_clipping")
    r = wgan.main(iterations=20, batch=32, n_critic=3)
    assert r["clipped"]["holds"], r["clipped"]
    assert r["clipped"]["largest_critic_weight"] == pytest.approx(wgan.CLIP, rel=1e-6)
    assert r["clipped"]["learned"], r["clipped"]
    assert r["gradient_only"]["largest_critic_weight"] > 10 * wgan.CLIP


def test_input_convex_network_is_convex_after_training():
    icnn = example("input_convex")
    r = icnn.main(epochs=2, samples=256)
    assert r["loss_last"] < r["loss_first"]
    assert r["violation"] == 0.0
    assert r["holds"], r


def test_the_convexity_check_catches_a_concave_network():
    """The check in input_convex.py must be able to fail."""
    icnn = example("input_convex")
    model = icnn.build(2, 8)
    kc.project(model)
    assert icnn.worst_convexity_gap(model, 2) <= icnn.TOLERANCE
    out = model.get_layer("out").kernel
    out.assign(-out.value)  # -convex + linear: concave
    assert icnn.worst_convexity_gap(model, 2) > 1e-6


def test_fixed_connectivity_keeps_masked_and_frozen_entries_exact():
    r = example("fixed_connectivity").main(epochs=2, samples=256)
    assert r["violation_at_start"] > 0.1, "initial weights start outside the sets"
    assert r["masked_exact"] and r["frozen_exact"] and r["holds"]
    assert r["free_trained"]
