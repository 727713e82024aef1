"""The test matrix: one virtualenv per Keras backend, plus lint, demo, docs and bench."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "tests"]
nox.options.error_on_missing_interpreters = True

BACKENDS = ["jax", "tensorflow", "torch"]
# The extra each backend's session installs. CI machines have no GPU: the
# CPU-only TensorFlow wheel, and torch pinned (tests/constraints.txt) to the
# local CPU build, so that pip never pulls the multi-GB CUDA packages.
EXTRAS = {"jax": "jax", "tensorflow": "tensorflow-cpu", "torch": "torch"}
PINS = "tests/constraints.txt"
PYPROJECT = nox.project.load_toml("pyproject.toml")
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2"}


def install(session, backend, *groups):
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-c", PINS, f".[{EXTRAS[backend]}]", *deps)


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """Run the whole test suite, doctests included, under one Keras backend."""
    install(session, backend, "test")
    env = {"KERAS_BACKEND": backend, **QUIET_TF}
    session.run("pytest", *session.posargs, env=env)


@nox.session
def lint(session):
    """ruff check and ruff format --check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=False)
def demo(session):
    """Train a constrained model on the default backend and show every constraint holds."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")  # Keras's own default
    install(session, backend)
    session.run("python", "examples/demo.py", env={"KERAS_BACKEND": backend, **QUIET_TF})
