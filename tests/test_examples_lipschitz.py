"""examples/lipschitz_mlp.py: after fit() on this backend, the MLP is 1-Lipschitz."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lipschitz_mlp.py"


def load_example():
    spec = importlib.util.spec_from_file_location("lipschitz_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_lipschitz_bound_holds_after_fit():
    example = load_example()
    r = example.main(width=16, epochs=2, samples=256)
    assert r["product_before"] > 1.5, "the kernels must start outside the set"
    assert r["moved"] > 1e-3, "training changed nothing"
    assert r["product"] <= 1 + example.TOLERANCE, r
    assert r["ratio"] <= 1 + example.TOLERANCE, r
    assert r["holds"]


def test_the_lipschitz_check_catches_a_network_that_is_not():
    """The checks in lipschitz_mlp.py must be able to fail."""
    example = load_example()
    model = example.build(8, 16)
    for kernel in example.kernels(model):  # sigma_1 = 2 each, unconstrained: no fit()
        kernel.assign(kernel.value * (2.0 / example.sigma1(kernel)))
    assert example.spectral_product(model) > 7.9
    assert example.largest_ratio(model, 8) > 1.1
