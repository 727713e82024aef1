"""The backend comes from KERAS_BACKEND alone, and a mismatch stops the run."""

import os

import pytest

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


def pytest_report_header(config):
    import keras

    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


def pytest_generate_tests(metafunc):
    parametrize_suite(metafunc)
