"""The test matrix: one virtualenv per Keras backend, plus lint and a benchmark smoke run.

Run on request only: demo, docs, bench (the full benchmark) and gpu.
"""

from __future__ import annotations

import os
import pathlib

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "tests", "distributed", "bench_smoke"]
nox.options.error_on_missing_interpreters = True

BACKENDS = ["jax", "tensorflow", "torch"]
# The extra each backend's session installs. CI machines have no GPU: the
# CPU-only TensorFlow wheel, and torch pinned (tests/constraints.txt) to the
# local CPU build, so that pip never pulls the multi-GB CUDA packages.
EXTRAS = {"jax": "jax", "tensorflow": "tensorflow-cpu", "torch": "torch"}
PINS = "tests/constraints.txt"
PYPROJECT = nox.project.load_toml("pyproject.toml")
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2"}
# The libraries kconstraints is compared with on one backend, besides Keras
# (dependency groups): by the tests for equal results, by the benchmarks for speed.
REFERENCES = {"jax": ["ref-jax"], "tensorflow": [], "torch": []}


def install(session, backend, *groups):
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-c", PINS, f".[{EXTRAS[backend]}]", *deps)


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """Run the whole test suite, doctests included, under one Keras backend."""
    install(session, backend, "test", *REFERENCES[backend])
    env = {"KERAS_BACKEND": backend, "KCONSTRAINTS_EXPECT_DEVICE": "cpu", **QUIET_TF}
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


# The smoke run's cases: an elementwise constraint and a norm, each with a Keras twin.
SMOKE_CASES = "NonNeg,MaxNorm"


@nox.session
@nox.parametrize("backend", BACKENDS)
def bench_smoke(session, backend):
    """Test the benchmark harness and run `python -m benchmarks --quick` on two cases."""
    install(session, backend, "test", "bench", *REFERENCES[backend])
    env = {"KERAS_BACKEND": backend, **QUIET_TF}
    session.run("pytest", "benchmarks/test_harness.py", *session.posargs, env=env)
    out = pathlib.Path(session.create_tmp()) / "bench-quick"  # never benchmarks/results/
    args = ["--quick", "--backend", backend, "--cases", SMOKE_CASES, "--train-models", "mlp"]
    session.run("python", "-m", "benchmarks", *args, "--fresh", "--out", str(out), env=env)


@nox.session(default=False)
def bench(session):
    """Benchmark every constraint on every backend; arguments go to `python -m benchmarks`."""
    references = [g for backend in BACKENDS for g in REFERENCES[backend]]
    groups = nox.project.dependency_groups(PYPROJECT, "bench", *references)
    session.install("-c", PINS, ".[jax,tensorflow-cpu,torch]", *groups)
    session.run("python", "-m", "benchmarks", *session.posargs, env=QUIET_TF)


@nox.session(default=False)
def docs(session):
    """Build the documentation site with mkdocs in strict mode (any warning fails)."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    env = {"NO_MKDOCS_2_WARNING": "1"}  # a banner about mkdocs 2, not a build warning
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env=env)


@nox.session(venv_backend="none", default=False)
@nox.parametrize("backend", BACKENDS)
def gpu(session, backend):
    """The test suite on this machine's own packages, checking that arrays live on the GPU."""
    env = {"KERAS_BACKEND": backend, "KCONSTRAINTS_EXPECT_DEVICE": "gpu", **QUIET_TF}
    session.run("python", "-m", "pytest", *session.posargs, env=env, external=True)


# Devices each backend's distributed test needs, made before the backend
# starts: JAX reads XLA_FLAGS at import; TensorFlow's logical CPUs are
# configured by the test module itself.
DISTRIBUTED_ENV = {
    "jax": {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    "tensorflow": {},
}


@nox.session
@nox.parametrize("backend", list(DISTRIBUTED_ENV))
def distributed(session, backend):
    """Multi-device fit() equals single-device fit(): JAX DataParallel/ModelParallel, TF MirroredStrategy."""
    install(session, backend, "test")
    env = {"KERAS_BACKEND": backend, **QUIET_TF, **DISTRIBUTED_ENV[backend]}
    session.run("pytest", "tests/test_distributed.py", *session.posargs, env=env)
