"""The test matrix: one virtualenv per Keras backend, plus lint and the wheel.

`tests(backend)` runs, in that backend's one virtualenv, the suite and then
the runs that need a process of their own: several devices (`distributed`),
two processes (`multiprocess`) and the benchmark harness (`bench_smoke`);
each of those is also a session of its own for running it alone.

Run on request only: demo, docs, bench (the full benchmark), gpu, long (the
tests marked `long`, left out of the default run to keep it short; CI runs
them), fuzz (the property tests with 5 times the generated inputs; CI runs
it), and lowest and latest (the oldest and newest supported releases; CI
runs them).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile
import zipfile

import nox
from packaging.requirements import Requirement

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "tests", "build"]
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


# What the default run leaves out: tests that take 15 s or more on one backend
# of a 2-core CPU (marked `long_on(backend)` at the test, `long` on that backend
# by tests/conftest.py; `nox -s long` runs them, and so does CI's workflow).
NOT_LONG = ["-m", "not long"]
# The suite in one worker process per core (pytest-xdist): on a 2-core CPU the
# JAX suite took 624 s instead of 855 s. The multi-device, multi-process and
# harness runs keep one process: they start their own.
WORKERS = ["-n", "auto"]


def suite_env(backend):
    return {"KERAS_BACKEND": backend, "KCONSTRAINTS_EXPECT_DEVICE": "cpu", **QUIET_TF}


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """The suite (doctests included, `long` tests left out), then the multi-device,
    multi-process and benchmark-harness runs, all under one Keras backend."""
    install(session, backend, "test", "bench", *REFERENCES[backend])
    session.run("pytest", *WORKERS, *NOT_LONG, *session.posargs, env=suite_env(backend))
    if session.posargs:  # a focused run (`-- -k simplex`): the suite alone
        return
    if backend in DISTRIBUTED_ENV:
        run_distributed(session, backend)
    run_multiprocess(session, backend)
    run_bench_smoke(session, backend, *NOT_LONG)


@nox.session(default=False)
@nox.parametrize("backend", ["jax", "torch"])  # TensorFlow has no test that long
def long(session, backend):
    """The tests marked `long` (compiled CNN fits, long loops), left out of `nox` alone."""
    install(session, backend, "test", "bench", *REFERENCES[backend])
    paths = [*PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"], "benchmarks/test_harness.py"]
    session.run("pytest", *WORKERS, "-m", "long", *paths, *session.posargs, env=suite_env(backend))


# `fuzz`: every property test of every registered constraint, through
# kconstraints.testing with 50 generated inputs per dtype where the default
# run tries 10 (tests/properties.py reads KCONSTRAINTS_EXAMPLES).
FUZZ = "test_properties or test_nonexpansive_and_optimal or registry_example"


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def fuzz(session, backend):
    """The property tests with a large budget of generated inputs (KCONSTRAINTS_EXAMPLES=50)."""
    install(session, backend, "test", "bench", *REFERENCES[backend])
    examples = os.environ.get("KCONSTRAINTS_EXAMPLES", "50")
    env = {**suite_env(backend), "KCONSTRAINTS_EXAMPLES": examples}
    session.run("pytest", *WORKERS, "-k", FUZZ, "tests", *session.posargs, env=env)


@nox.session
def lint(session):
    """ruff check, ruff format --check, and the CI workflow against its schema."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # GitHub's workflow schema ships inside check-jsonschema: no network needed.
    schema = ["--builtin-schema", "vendor.github-workflows"]
    session.run("check-jsonschema", *schema, ".github/workflows/ci.yml")


@nox.session(default=False)
def demo(session):
    """Train a constrained model on the default backend and show every constraint holds."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")  # Keras's own default
    install(session, backend)
    session.run("python", "examples/demo.py", env={"KERAS_BACKEND": backend, **QUIET_TF})


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def bench_smoke(session, backend):
    """The benchmark harness's tests: `python -m benchmarks --quick` on two cases, JSON and page."""
    install(session, backend, "test", "bench", *REFERENCES[backend])
    run_bench_smoke(session, backend)


def run_bench_smoke(session, backend, *select):
    env = {"KERAS_BACKEND": backend, **QUIET_TF}
    session.run("pytest", "benchmarks/test_harness.py", *select, *session.posargs, env=env)


@nox.session(default=False)
def bench(session):
    """Benchmark every constraint on every backend (pytest-benchmark, one process each) into
    benchmarks/results/<device>/; arguments go to `python -m benchmarks`."""
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


# The oldest and the newest releases the package is tested on. pip has no
# lowest-resolution mode, so `lowest` pins each direct dependency to the floor
# pyproject.toml declares; `latest` takes the newest release of each. torch
# stays at the CPU build of tests/constraints.txt in both: any other torch
# would pull the multi-GB CUDA packages.


def direct_requirements(backend):
    """The package's dependencies and its backend extra's, as written in pyproject.toml."""
    project = PYPROJECT["project"]
    lines = project["dependencies"] + project["optional-dependencies"][EXTRAS[backend]]
    return [Requirement(line) for line in lines]


def floors(backend):
    """`name==floor` for each direct dependency: the `>=` bound pyproject.toml declares."""
    pins = []
    for requirement in direct_requirements(backend):
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        pins.append(f"{requirement.name}=={floor}")
        if requirement.name == "jax":  # jaxlib shares jax's version number; jax accepts older ones
            pins.append(f"jaxlib=={floor}")
    return pins


def show_versions(session):
    """Print the installed version of every package the suite's results depend on."""
    names = "keras numpy jax jaxlib tensorflow-cpu torch ml-dtypes optax pytest"
    code = (
        "import importlib.metadata as m\n"
        f"for name in {names.split()!r}:\n"
        "    try: print(f'{name:<16}{m.version(name)}')\n"
        "    except m.PackageNotFoundError: pass"
    )
    session.run("python", "-c", code)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def lowest(session, backend):
    """The test suite on the floors of pyproject.toml: keras, numpy and the backend pinned there."""
    groups = nox.project.dependency_groups(PYPROJECT, "test", *REFERENCES[backend])
    session.install(".", *floors(backend), *groups)
    show_versions(session)
    session.run("pytest", *WORKERS, *session.posargs, env=suite_env(backend))


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def latest(session, backend):
    """The test suite on the newest keras, numpy and backend releases, to notice a new one."""
    torch_only = pathlib.Path(session.create_tmp()) / "torch.txt"
    pins = pathlib.Path(PINS).read_text().splitlines()
    torch_only.write_text("\n".join(p for p in pins if p.startswith("torch")) + "\n")
    names = [r.name for r in direct_requirements(backend)]
    groups = nox.project.dependency_groups(PYPROJECT, "test", *REFERENCES[backend])
    session.install("--upgrade", "-c", str(torch_only), ".", *names, *groups)
    show_versions(session)
    session.run("pytest", *WORKERS, *session.posargs, env=suite_env(backend))


# What `nox -s build` runs against each installed wheel, from a folder outside
# the checkout: the demo at a small size (eager on torch, where compiling its
# 14-layer step takes minutes), after checking that kconstraints comes from
# the wheel.
WHEEL_DEMO = """
import sys, demo, kconstraints, keras
assert kconstraints.__file__.startswith(sys.prefix), kconstraints.__file__
print("kconstraints", kconstraints.__version__, "from", kconstraints.__file__)
sys.exit(demo.main(epochs=1, samples=128, jit_compile=keras.backend.backend() != "torch"))
"""
# The installed package's doctests, with an empty pytest.ini of the run folder.
WHEEL_DOCTESTS = ["-q", "-c", "pytest.ini", "-p", "no:cacheprovider", "--doctest-modules"]
WHEEL_DOCTESTS += ["--pyargs", "kconstraints"]


def check_wheel(session, wheel):
    """The wheel holds every module, the declared package data and the license."""
    names = zipfile.ZipFile(wheel).namelist()
    session.log("%s:\n  %s", wheel.name, "\n  ".join(names))
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]["kconstraints"]
    modules = sorted(pathlib.Path("kconstraints").rglob("*.py"))
    expected = [p.as_posix() for p in modules if "__pycache__" not in p.parts]
    expected += [f"kconstraints/{name}" for name in package_data]
    missing = [name for name in expected if name not in names]
    for license_file in PYPROJECT["project"]["license-files"]:
        if not any(n.endswith(f".dist-info/licenses/{license_file}") for n in names):
            missing.append(f"*.dist-info/licenses/{license_file}")
    if missing:
        session.error(f"{wheel.name} lacks {', '.join(missing)}")


@nox.session
def build(session):
    """Build and twine-check the sdist and wheel; run the demo and doctests from the wheel per backend."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "build"))
    dist = pathlib.Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *map(str, sorted(dist.iterdir())))
    (wheel,) = dist.glob("*.whl")
    check_wheel(session, wheel)
    test_deps = nox.project.dependency_groups(PYPROJECT, "test")
    # Outside the checkout: pytest would otherwise find pyproject.toml, whose
    # `pythonpath` makes the checkout importable instead of the wheel.
    with tempfile.TemporaryDirectory(prefix="kconstraints-wheel-") as tmp:
        run_dir = pathlib.Path(tmp)
        shutil.copy("examples/demo.py", run_dir)
        (run_dir / "pytest.ini").write_text("[pytest]\n")
        for backend in BACKENDS:
            venv = run_dir / f"venv-{backend}"
            session.run(sys.executable, "-m", "virtualenv", "-q", str(venv), external=True)
            python = str(venv / "bin" / "python")
            wheel_req = f"kconstraints[{EXTRAS[backend]}] @ {wheel.resolve().as_uri()}"
            install = ["-m", "pip", "install", "-q", "-c", str(pathlib.Path(PINS).resolve())]
            session.run(python, *install, wheel_req, *test_deps, external=True)
            env = {"KERAS_BACKEND": backend, **QUIET_TF}
            with session.chdir(run_dir):
                session.run(python, "-c", WHEEL_DEMO, env=env, external=True)
                session.run(python, "-m", "pytest", *WHEEL_DOCTESTS, env=env, external=True)
            shutil.rmtree(venv)  # about 2 GB each: never three at once on a small disk


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


@nox.session(default=False)
@nox.parametrize("backend", list(DISTRIBUTED_ENV))
def distributed(session, backend):
    """Multi-device fit() equals single-device fit(): JAX DataParallel/ModelParallel, TF MirroredStrategy."""
    install(session, backend, "test")
    run_distributed(session, backend)


def run_distributed(session, backend):
    env = {"KERAS_BACKEND": backend, **QUIET_TF, **DISTRIBUTED_ENV[backend]}
    session.run("pytest", "tests/test_distributed.py", *session.posargs, env=env)


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def multiprocess(session, backend):
    """Two processes on 127.0.0.1 train as one: JAX multi-process, torch DDP, TF multi-worker."""
    install(session, backend, "test")
    run_multiprocess(session, backend)


def run_multiprocess(session, backend):
    env = {"KERAS_BACKEND": backend, "KCONSTRAINTS_MULTIPROCESS": "1", **QUIET_TF}
    # -rA: the passing tests' output too, where each prints its max |dw|.
    session.run("pytest", "tests/test_multiprocess.py", "-rA", *session.posargs, env=env)
