"""Each script in examples/ runs on this backend at a small size and shows what it claims.

The guides in docs/guides/ show these scripts whole (`tests/test_docs.py`
checks the includes), so these tests are what keeps the guides true.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import kconstraints as kc

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The scripts the tests below run; a new script needs a test here.
TESTED = {
    "demo",
    "positive_variable",
    "wgan_clipping",
    "input_convex",
    "monotone_network",
    "fixed_connectivity",
    "lipschitz_mlp",
    "certified_digits",
    "pruning",
}


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_test():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == TESTED


def test_demo_shows_every_constraint_holds(capsys):
    demo = example("demo")
    # Eager: torch.compile of its 14-layer step takes minutes on a CPU, and
    # tests/test_fit.py covers compiled steps.
    assert demo.main(epochs=1, samples=128, jit_compile=False) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name, _, _ in demo.CONSTRAINTS)
    assert " NO" not in printed


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


def test_monotone_network_is_monotone_after_training():
    monotone = example("monotone_network")
    r = monotone.main(epochs=3, samples=512)
    assert r["loss_last"] < r["loss_first"]
    assert r["violation"] == 0.0
    assert r["lipschitz_l1"] <= monotone.LAM * (1 + 1e-5)  # float32 rounding of the row sums
    assert r["holds"], r


def test_the_monotonicity_check_catches_a_decreasing_network():
    """The check in monotone_network.py must be able to fail."""
    monotone = example("monotone_network")
    model = monotone.build(3, 8)
    kc.project(model)
    assert monotone.worst_decrease(model, 3) >= -monotone.TOLERANCE
    slope = model.get_layer("residual").kernel
    slope.assign(-slope.value)  # g - lam * x_S: non-increasing in x_S
    assert monotone.worst_decrease(model, 3) < -1e-3


def test_fixed_connectivity_keeps_masked_and_frozen_entries_exact():
    r = example("fixed_connectivity").main(epochs=2, samples=256)
    assert r["violation_at_start"] > 0.1, "initial weights start outside the sets"
    assert r["masked_exact"] and r["frozen_exact"] and r["holds"]
    assert r["free_trained"]


@pytest.mark.long_on("torch")
def test_lipschitz_bound_holds_after_fit():
    lipschitz = example("lipschitz_mlp")
    r = lipschitz.main(width=16, epochs=2, samples=256)
    assert r["product_before"] > 1.5, "the kernels must start outside the set"
    assert r["moved"] > 1e-3, "training changed nothing"
    assert r["product"] <= 1 + lipschitz.TOLERANCE, r
    assert r["ratio"] <= 1 + lipschitz.TOLERANCE, r
    assert r["holds"]


def test_the_lipschitz_check_catches_a_network_that_is_not():
    """The checks in lipschitz_mlp.py must be able to fail."""
    lipschitz = example("lipschitz_mlp")
    model = lipschitz.build(8, 16)
    for kernel in lipschitz.kernels(model):  # sigma_1 = 2 each, unconstrained: no fit()
        kernel.assign(kernel.value * (2.0 / lipschitz.sigma1(kernel)))
    assert lipschitz.spectral_product(model) > 7.9
    assert lipschitz.largest_ratio(model, 8) > 1.1


def test_pruning_keeps_every_kernel_sparse_and_still_learns():
    pruning = example("pruning")
    r = pruning.main(sparsities=(0.8,), epochs=3, width=16, changes=2)
    assert r["holds"], r
    (row,) = r["rows"]
    assert row["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert r["two_four"]["sparsity"] >= 0.5
    # Ten classes: chance is 0.1 (0.014 the standard deviation of a guess's
    # accuracy on the 450 test digits). Three epochs of a 16-wide MLP learn above
    # it, 80% pruned from the first step too (0.18 on JAX, 0.27 on torch).
    assert r["dense"] > 0.5
    assert min(row["gradual"], row["from_start"], r["two_four"]["accuracy"]) > 0.15


def test_the_pruning_checks_catch_a_dense_kernel():
    """The checks in pruning.py must be able to fail."""
    pruning = example("pruning")
    model = pruning.build(lambda: None, width=8)
    assert not pruning.top_k_exact(model, 0.5)
    assert not pruning.two_four_exact(model)
    kc.project(model)  # no constraints: nothing changes
    model = pruning.build(lambda: kc.NM(2, 4), width=8)
    kc.project(model)
    assert pruning.two_four_exact(model)


def test_certified_digits_certificates_hold():
    digits = example("certified_digits")
    # Eager: torch.compile of this Sequential fails inside dynamo on CPU here
    # (InternalTorchDynamoError in Sequential.call); tests/test_fit.py covers
    # compiled steps. The full run (docs/lipschitz.md) is compiled, on JAX.
    r = digits.main(epochs=3, samples=400, directions=2, jit_compile=False)
    assert r["loss"][1] < r["loss"][0], r
    assert r["lipschitz"] <= 1 + 1e-4, "every layer is constrained to norm <= 1"
    assert r["clean"] > 0.3, "far better than chance (0.1)"
    assert r["certified"][0.0] == r["clean"]
    accuracies = [r["certified"][eps] for eps in sorted(r["certified"])]
    assert accuracies == sorted(accuracies, reverse=True), "shrinks as eps grows"
    assert r["checked"] > 0 and r["flipped"] == 0, r


def test_the_certificate_check_catches_an_unsound_bound():
    """check_perturbations must be able to fail: with L understated 1000 times, it flips."""
    digits = example("certified_digits")
    (x, y), (x_test, _) = digits.load(samples=200)
    model = digits.build(width=4)
    logits = model.predict(x_test, verbose=0)
    lipschitz = digits.kc.lipschitz_bound(model)
    flipped, checked = digits.check_perturbations(
        model, x_test, logits, x, y, lipschitz / 1000, 2.0, 2, 0
    )
    assert checked > 0 and flipped > 0
