"""One property suite for every constraint.

A test module lists its constraints as `Case`s and subclasses
`PropertySuite`; `conftest.pytest_generate_tests` parametrizes each test
method over the module's cases. Every case carries a float64 NumPy reference
of its projection: a one-line lambda or a function of `tests/references.py`.
A case's fields decide which tests it gets (`kinds`, `convex`, `projection`):
a test no case of a module gets is not generated there at all.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable

import numpy as np
import pytest

import kconstraints
from kconstraints._registry import spec_of
from tests.backend import float64_enabled, graph_breaks, jit
from tests.helpers import EPS, FLOAT_DTYPES, dtype_of, sample, tensor, to_np, tol


@dataclasses.dataclass
class Case:
    constraint: object
    shape: tuple
    reference: Callable[[np.ndarray], np.ndarray]
    # Its set is convex. None: the registry's `convex` of the class, which
    # holds for the registry's examples; a case whose arguments differ says so.
    convex: bool | None = None
    # The constraint returns the nearest point of its set, not a rescaling
    # into it (AOL, SpectralNorm's "scale") nor a few sweeps towards it
    # (Sinkhorn's). A convex set's projection is non-expansive and satisfies
    # <w - P(w), z - P(w)> <= 0 for feasible z: the `convex_only` tests.
    projection: bool = True
    # Input kinds this case is tested on (see helpers.sample).
    kinds: tuple = ("normal", "ties", "large")
    # Relative tolerance factor (iterative methods get more).
    factor: float = 64

    def __post_init__(self):
        if self.convex is None:
            self.convex = spec_of(type(self.constraint)).convex

    def __str__(self):
        return f"{self.constraint!r}-{self.shape}"


def _parameters(cls, fn):
    """`(argnames, values, ids)` a suite's test is parametrized with; None if it takes no case."""
    arguments = inspect.signature(fn).parameters
    cases = cls.cases
    if getattr(fn, "convex_only", False):
        cases = [c for c in cases if c.convex and c.projection]
    if "kind" in arguments:
        # Only the input kinds a case declares: no skipped combinations.
        pairs = [(c, k) for c in cases for k in c.kinds]
        return "case, kind", pairs, [f"{c}-{k}" for c, k in pairs]
    if "case" in arguments:
        return "case", cases, [str(c) for c in cases]
    return None


def parametrize_suite(metafunc):
    cls = metafunc.cls
    if cls is None or not issubclass(cls, PropertySuite):
        return
    parameters = _parameters(cls, metafunc.function)
    if parameters is not None:
        argnames, values, ids = parameters
        metafunc.parametrize(argnames, values, ids=ids)


def ungenerated(collector, name, obj):
    """`[]` for a suite's test that no case of its module gets, else None.

    From `pytest_pycollect_makeitem`: such a test is not collected at all,
    where parametrizing it with no value would collect one skipped test.
    """
    cls = getattr(collector, "obj", None) if isinstance(collector, pytest.Class) else None
    if cls is None or not issubclass(cls, PropertySuite) or not collector.istestfunction(obj, name):
        return None
    parameters = _parameters(cls, obj)
    return [] if parameters is not None and not parameters[1] else None


def convex_only(fn):
    """The test runs on the cases that project onto a convex set (`convex` and `projection`)."""
    fn.convex_only = True
    return fn


def _project(case, w, dtype="float32"):
    return to_np(case.constraint(tensor(w, dtype)))


def _scale(w):
    return float(np.max(np.abs(w), initial=1.0))


class PropertySuite:
    cases: list = []

    def test_matches_reference(self, case, kind):
        w = sample(case.shape, kind, seed=1)
        got = _project(case, w)
        want = case.reference(w)
        np.testing.assert_allclose(got, want, rtol=0, atol=tol("float32", _scale(w), case.factor))

    def test_feasible_input_unchanged(self, case, kind):
        z = case.reference(sample(case.shape, kind, seed=2))
        z32 = z.astype("float32").astype("float64")
        got = _project(case, z32)
        np.testing.assert_allclose(got, z32, rtol=0, atol=tol("float32", _scale(z), case.factor))

    def test_idempotent(self, case, kind):
        once = _project(case, sample(case.shape, kind, seed=3))
        twice = _project(case, once)
        np.testing.assert_allclose(
            twice, once, rtol=0, atol=tol("float32", _scale(once), case.factor)
        )

    @pytest.mark.parametrize("dtype", FLOAT_DTYPES)
    def test_dtype_and_shape(self, case, dtype):
        w = sample(case.shape, "normal", seed=4)
        with float64_enabled():
            x = tensor(w, dtype)
            out = case.constraint(x)
            assert dtype_of(x) == dtype
            assert dtype_of(out) == dtype
            assert tuple(out.shape) == tuple(case.shape)
            got = to_np(out)
        # Half precision: compare with the reference of the rounded input.
        w_rounded = to_np(x)
        want = case.reference(w_rounded)
        np.testing.assert_allclose(
            got, want, rtol=0, atol=tol(dtype, _scale(want), 4 * case.factor)
        )

    def test_config_round_trip(self, case):
        config = json.loads(json.dumps(kconstraints.serialize(case.constraint)))
        clone = kconstraints.deserialize(config)
        assert type(clone) is type(case.constraint)
        assert clone.get_config() == case.constraint.get_config()
        w = sample(case.shape, "normal", seed=5)
        np.testing.assert_array_equal(_project(case, w), to_np(clone(tensor(w))))

    def test_jit_matches_eager(self, case):
        w = tensor(sample(case.shape, "normal", seed=6))
        compiled = jit(lambda x: case.constraint(x))
        with graph_breaks() as breaks:
            got = to_np(compiled(w))
        # torch: one graph, no Python between pieces of it.
        assert breaks[0] == 0, f"{breaks[0]} graph breaks under torch.compile"
        np.testing.assert_allclose(
            got,
            to_np(case.constraint(w)),
            rtol=0,
            atol=tol("float32", 10, case.factor),
        )

    def test_zeros_give_no_nan(self, case):
        got = _project(case, np.zeros(case.shape))
        assert np.all(np.isfinite(got)), got

    @convex_only
    def test_nonexpansive(self, case):
        a, b = sample(case.shape, "normal", seed=7), sample(case.shape, "normal", seed=8) * 3
        pa, pb = _project(case, a), _project(case, b)
        assert np.linalg.norm(pa - pb) <= np.linalg.norm(a - b) * (1 + 1e-5)

    @convex_only
    def test_optimal(self, case):
        w = sample(case.shape, "normal", seed=9) * 2
        p = _project(case, w)
        for seed in range(10, 15):
            z = case.reference(sample(case.shape, "normal", seed=seed) * 3)
            inner = float(np.sum((w - p) * (z - p)))
            assert inner <= 1e3 * EPS["float32"] * _scale(w) * np.sqrt(w.size) * _scale(z), inner
