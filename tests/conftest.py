"""The backend comes from KERAS_BACKEND alone, and a mismatch stops the run."""

import os

import pytest

from tests.backend import reset_compiler
from tests.properties import parametrize_suite


def pytest_configure(config):
    requested = os.environ.get("KERAS_BACKEND")
    if requested not in ("jax", "tensorflow", "torch"):
        raise pytest.UsageError(
            f"Set KERAS_BACKEND to jax, tensorflow or torch (got {requested!r}); "
            "`nox -s tests` does this for each backend."
        )
    import keras

    active = keras.backend.backend()
    if active != requested:
        raise pytest.UsageError(
            f"KERAS_BACKEND={requested} was requested but Keras runs on {active}."
        )
    if active == "torch":
        import torch

        # A function dynamo stops compiling (its recompile limit) would run
        # eagerly and its jit test pass without compiling: make that a failure.
        torch._dynamo.config.fail_on_recompile_limit_hit = True


@pytest.fixture(autouse=True)
def _fresh_torch_compile_cache():
    """Every test compiles from a clean torch.compile cache.

    Keras's torch `train_step` is one code object for every model, so after
    about four compiled models dynamo hits its recompile limit and silently
    runs later `jit_compile=True` fits eagerly: those jit tests would pass
    without compiling. Resetting per test keeps each one compiled, and
    `pytest_configure` makes reaching the limit within one test a failure
    (the compiled mixed_float16 fit with loss scaling needs a callback for
    that: `test_mixed_precision.SameCondNames`).
    """
    reset_compiler()
    yield


def pytest_report_header(config):
    import keras

    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def pytest_generate_tests(metafunc):
    parametrize_suite(metafunc)


# Tests marked `long` on one backend: each took 15-55 s there on a 2-core CPU
# (torch: compiling whole models; JAX: the merge isotonic regression run
# eagerly, one dispatch per loop step), while the same test takes a few
# seconds on the others. `nox` alone (what CI's `.ci/run` runs) leaves them
# out to stay within its time; `nox -s long` and the GitHub workflow run them.
LONG = {
    "torch": (
        "tests/test_fit.py::test_fit_keeps_every_kind_of_constrained_weight_feasible[jit]",
        "tests/test_matrix_bands.py::test_a_compiled_fit_adds_no_graph_break",
        "tests/test_certify.py::test_compiled_fit_with_conv_spectral_norm_keeps_the_certificate",
        "tests/test_lipschitz.py::test_a_compiled_fit_keeps_the_certificate",
        "tests/test_torch_loops.py::test_a_compiled_train_step_breaks_only_where_keras_does",
        "tests/test_mixed_precision.py::test_compiled_fit_with_loss_scaling[mixed_float16]",
        "tests/test_examples.py::test_lipschitz_bound_holds_after_fit",
        "tests/test_callbacks.py::test_enforce_constraints_makes_the_power_method_exact_after_every_epoch[jit]",
    ),
    "jax": (
        "tests/test_order.py::test_long_slices_match_pava_and_sklearn[4096]",
        "tests/test_order.py::test_auto_takes_the_merge_above_the_pairwise_length",
        "tests/test_order.py::test_merge_matches_pava_and_sklearn_on_adversarial_slices[up-all-equal-100]",
        "tests/test_order.py::test_slices_of_300_entries_match_pava[merge]",
        "tests/test_order.py::test_merge_in_every_dtype_on_a_long_slice[float16]",
    ),
}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    import keras

    prefixes = LONG.get(keras.backend.backend(), ())
    for item in items:
        if item.nodeid.startswith(prefixes):
            item.add_marker(pytest.mark.long)
