"""_backend.py: the package's only backend-specific code, and the only place that names a version."""

import pathlib
import re

import keras
import numpy as np
import pytest

import kconstraints
from kconstraints import _backend
from tests.backend import BACKEND, graph_breaks, jit
from tests.helpers import tensor, to_np

PACKAGE = pathlib.Path(kconstraints.__file__).parent
VERSION = re.compile(r"\b(keras|jax|jaxlib|tensorflow|tf|torch|xla)\s+v?\d+\.\d+", re.IGNORECASE)
BACKEND_NAMES = re.compile(r"import (jax|tensorflow|torch)\b|backend\(\) == ")


@pytest.mark.parametrize(
    "path", sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "_backend.py")
)
def test_no_other_module_names_a_version_or_branches_on_the_backend(path):
    text = (PACKAGE / path).read_text()
    assert not VERSION.findall(text), f"{path} names a version: move the fact to _backend.py"
    assert not BACKEND_NAMES.findall(text), f"{path} has backend-specific code"


def test_the_version_check_finds_what_it_looks_for():
    assert VERSION.findall("verified on Keras 3.15 and torch 2.13")
    assert BACKEND_NAMES.findall("    import torch\n")
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
