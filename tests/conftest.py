"""The backend comes from KERAS_BACKEND alone, and a mismatch stops the run."""

import os

import pytest

from tests.backend import reset_compiler
from tests.properties import parametrize_suite, ungenerated


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


def pytest_pycollect_makeitem(collector, name, obj):
    return ungenerated(collector, name, obj)


# `@pytest.mark.long_on("torch")` on a test (or a `pytest.param`) says it took
# 15-55 s on that backend of a 2-core CPU (torch: compiling whole models;
# JAX: the merge isotonic regression run eagerly, one dispatch per loop
# step), while it takes a few seconds on the others. On the backends it
# names, it is marked `long`: `nox` alone (what CI's `.ci/run` runs) leaves
# those out (`-m "not long"`) to stay within its time; `nox -s long` and the
# GitHub workflow run them (`-m long`).
BACKENDS = ("jax", "tensorflow", "torch")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    import keras

    active = keras.backend.backend()
    for item in items:
        for mark in item.iter_markers("long_on"):
            unknown = [b for b in mark.args if b not in BACKENDS]
            if unknown or not mark.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: `long_on` takes backends among {BACKENDS}, got {mark.args!r}."
                )
            if active in mark.args:
                item.add_marker(pytest.mark.long)
