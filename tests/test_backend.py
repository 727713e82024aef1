"""_backend.py: the package's only backend-specific code, and the only place that names a version."""

import contextlib
import copy
import pathlib
import pickle
import re

import keras
import numpy as np
import pytest

import kconstraints
from kconstraints import _backend
from tests.backend import BACKEND, float64_enabled, graph_breaks, jit
from tests.helpers import dtype_of, sample, tensor, to_np

PACKAGE = pathlib.Path(kconstraints.__file__).parent
VERSION = re.compile(r"\b(keras|jax|jaxlib|tensorflow|tf|torch|xla)\s+v?\d+\.\d+", re.IGNORECASE)
BACKEND_NAMES = re.compile(r"import (jax|tensorflow|torch)\b|backend\(\) [=!]= ")
# Every module but _backend.py, in subpackages too (kconstraints.testing).
OTHERS = sorted(
    p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "_backend.py"
)


@pytest.mark.parametrize("path", OTHERS)
def test_no_other_module_names_a_version_or_branches_on_the_backend(path):
    text = (PACKAGE / path).read_text()
    assert not VERSION.findall(text), f"{path} names a version: move the fact to _backend.py"
    assert not BACKEND_NAMES.findall(text), f"{path} has backend-specific code"


def test_the_version_check_finds_what_it_looks_for():
    assert VERSION.findall("verified on Keras 3.15 and torch 2.13")
    assert BACKEND_NAMES.findall("    import torch\n")
    assert BACKEND_NAMES.findall('if keras.backend.backend() != "torch":')
    assert "testing/_check.py" in OTHERS
    assert VERSION.findall((PACKAGE / "_backend.py").read_text())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("pick", [True, False])
def test_cond_runs_the_branch_its_predicate_picks_inside_one_graph(pick, compiled):
    def both(flag, x, bound):
        return _backend.cond(
            flag, lambda x, b: x * b, lambda x, b: keras.ops.zeros_like(x) - b, (x, bound)
        )

    x, bound = tensor([1.0, -2.0]), tensor(3.0)
    flag = keras.ops.convert_to_tensor(pick)
    fn = jit(both, fullgraph=True) if compiled else both
    with graph_breaks() as breaks:
        got = to_np(fn(flag, x, bound))
    assert breaks[0] == 0
    np.testing.assert_array_equal(got, [3.0, -6.0] if pick else [-3.0, -3.0])


def test_sync_training_state_calls_the_jax_hook_where_there_is_one():
    calls = []

    class WithHook:
        def jax_state_sync(self):
            calls.append(1)

    _backend.sync_training_state(WithHook())
    _backend.sync_training_state(object())  # no hook: nothing to do
    assert calls == [1]


def test_only_jax_models_have_the_hook():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert callable(getattr(model, "jax_state_sync", None)) == (BACKEND == "jax")


# ------------------------------------------ eager calls: one compiled projection


LOOPED = [
    lambda: kconstraints.Simplex(axis=0),
    lambda: kconstraints.L1Ball(axis=0),
    lambda: kconstraints.Monotonic(axis=0),
]
LOOPED_IDS = ["Simplex", "L1Ball", "Monotonic"]
only_jax = pytest.mark.skipif(BACKEND != "jax", reason="JAX's eager compiles")


@contextlib.contextmanager
def jax_compiles():
    """`with jax_compiles() as n:` leaves in `n[0]` the XLA compilations JAX made inside."""
    import jax

    count = [0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@only_jax
@pytest.mark.parametrize("make", LOOPED, ids=LOOPED_IDS)
def test_a_second_eager_call_on_jax_compiles_nothing(make):
    c, w = make(), tensor(sample((16, 8), seed=1))
    with jax_compiles() as first:
        c(w)
    with jax_compiles() as second:
        got = c(w)
    assert first[0] == 1  # the projection, once, as one program
    assert second[0] == 0
    other = tensor(sample((4, 8), seed=1))
    with jax_compiles() as other_shape:  # each shape compiles once
        c(other)
    assert other_shape[0] == 1
    np.testing.assert_array_equal(to_np(got), to_np(c.project(w)))


@only_jax
def test_eager_calls_inside_a_jax_trace_keep_no_compiled_projection():
    c = kconstraints.Simplex(axis=0)
    jit(c)(tensor(sample((5, 3))))
    assert _backend.EAGER_CACHE not in c.__dict__


@pytest.mark.parametrize("make", LOOPED, ids=LOOPED_IDS)
def test_an_eager_call_equals_the_compiled_one(make):
    c, w = make(), tensor(sample((6, 4), seed=2))
    eager = to_np(c(w))
    np.testing.assert_allclose(to_np(c(w)), eager, rtol=0, atol=0)
    np.testing.assert_allclose(to_np(jit(c)(w)), eager, rtol=1e-6, atol=1e-6)


def test_an_argument_changed_after_a_call_changes_the_result():
    w = tensor(sample((5, 3), seed=3))
    c = kconstraints.Simplex(axis=0)
    np.testing.assert_allclose(to_np(c(w)).sum(axis=0), 1.0, atol=1e-6)
    c.total = 2.0
    np.testing.assert_allclose(to_np(c(w)).sum(axis=0), 2.0, atol=1e-6)
    # One held by another constraint too: its owner is traced again.
    inner = kconstraints.L1Ball(radius=1.0, axis=0)
    outer = kconstraints.Compose([inner])
    np.testing.assert_allclose(np.abs(to_np(outer(w * 10))).sum(axis=0), 1.0, atol=1e-5)
    inner.radius = 0.5
    np.testing.assert_allclose(np.abs(to_np(outer(w * 10))).sum(axis=0), 0.5, atol=1e-5)


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_called_constraint_copies_without_its_compiled_projection(duplicate):
    w = tensor(sample((5, 3), seed=4))
    nested = kconstraints.Compose([kconstraints.Simplex(axis=0), kconstraints.Monotonic(axis=0)])
    c = kconstraints.Simplex(axis=0)
    before, nested_before = to_np(c(w)), to_np(nested(w))
    twin, nested_twin = duplicate(c), duplicate(nested)
    assert _backend.EAGER_CACHE not in twin.__dict__
    np.testing.assert_array_equal(to_np(twin(w)), before)
    np.testing.assert_array_equal(to_np(nested_twin(w)), nested_before)
    twin.total = 3.0  # the copy's own argument, not the original's
    np.testing.assert_allclose(to_np(twin(w)).sum(axis=0), 3.0, atol=1e-5)
    np.testing.assert_array_equal(to_np(c(w)), before)


def test_float64_weights_stay_float64_after_a_float32_call():
    c = kconstraints.Simplex(axis=0)
    x = sample((5, 3), seed=5)
    c(tensor(x))
    with float64_enabled():
        got = c(tensor(x, "float64"))
        assert dtype_of(got) == "float64"
        np.testing.assert_allclose(to_np(got).sum(axis=0), 1.0, rtol=0, atol=1e-14)
    assert dtype_of(c(tensor(x))) == "float32"


@pytest.mark.parametrize("make", LOOPED, ids=LOOPED_IDS)
def test_a_bad_axis_raises_at_every_eager_call(make):
    c = make()
    c.axis = 2
    for _ in range(2):  # a failed trace is not kept
        with pytest.raises(ValueError, match=r"`axis`=2 is out of range for a weight of shape"):
            c(tensor(np.ones((3, 4))))


class _ReadsValues(kconstraints.Constraint):
    """A projection that reads a value in Python: jit can not trace it."""

    def project(self, w):
        return w * 0.0 if float(keras.ops.amax(w)) > 10.0 else w


def test_a_projection_that_reads_values_in_python_still_runs_eagerly():
    c, w = _ReadsValues(), tensor(np.ones((2, 2)))
    np.testing.assert_array_equal(to_np(c(w)), np.ones((2, 2)))
    np.testing.assert_array_equal(to_np(c(w * 20.0)), np.zeros((2, 2)))
