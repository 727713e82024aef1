"""One property suite for every constraint, run through `kconstraints.testing`.

A test module lists its constraints as `Case`s and subclasses
`PropertySuite`; `conftest.pytest_generate_tests` parametrizes each test
method over the module's cases. Every case carries a float64 NumPy reference
of its projection: a one-line lambda or a function of `tests/references.py`.
Each test is one `check_constraint` call, the way a user checks their own
constraint; `KCONSTRAINTS_EXAMPLES` sets its generated inputs per dtype
(10 here, 50 in `nox -s fuzz`). A case's fields decide which tests it gets
(`convex`, `projection`): a test no case of a module gets is not generated
there at all.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable

import pytest

from kconstraints._registry import spec_of
from kconstraints.testing import EXPONENTS, KINDS, check_constraint

#: Generated inputs per dtype of each check.
EXAMPLES = int(os.environ.get("KCONSTRAINTS_EXAMPLES", "10"))
#: The properties every case is checked for, in eager calls.
EAGER = ("shape", "dtype", "finite", "feasible", "reference", "idempotent", "unchanged")


@dataclasses.dataclass
class Case:
    constraint: object
    shape: tuple
    reference: Callable
    # Its set is convex. None: the registry's `convex` of the class, which
    # holds for the registry's examples; a case whose arguments differ says so.
    convex: bool | None = None
    # The constraint returns the nearest point of its set, not a rescaling
    # into it (AOL, SpectralNorm's "scale") nor a few sweeps towards it
    # (Sinkhorn's). A convex set's projection is non-expansive and satisfies
    # <w - P(w), z - P(w)> <= 0 for feasible z: the `convex_only` tests.
    projection: bool = True
    # P(P(w)) = P(w), and a feasible weight is kept: false for a map that
    # only moves towards its set (DoublyStochastic's few sweeps) or rescales
    # by a bound that its own output does not meet with equality (AOL).
    idempotent: bool = True
    # The input kinds and decimal exponents tried (kconstraints.testing.KINDS).
    kinds: tuple = tuple(KINDS)
    exponents: tuple = EXPONENTS
    # `feasible(p, tol) -> bool`, checked besides the reference.
    feasible: Callable | None = None
    # Relative tolerance factor (iterative methods get more).
    factor: float = 64
    # The backends on which this case's tests are `long` (tests/conftest.py):
    # left out of the default run, run by `nox -s long`.
    long_on: tuple = ()

    def __post_init__(self):
        if self.convex is None:
            self.convex = spec_of(type(self.constraint)).convex

    def __str__(self):
        return f"{self.constraint!r}-{self.shape}"

    def check(self, properties, **options):
        """`check_constraint` of this case; every property asked for must have held on some input."""
        options = {"examples": EXAMPLES, **options}
        report = check_constraint(
            self.constraint,
            self.shape,
            reference=self.reference,
            feasible=self.feasible,
            convex=bool(self.convex and self.projection),
            kinds=self.kinds,
            exponents=self.exponents,
            factor=self.factor,
            properties=properties,
            **options,
        )
        unchecked = [p for p in properties if not report.inputs.get(p) and p not in report.skipped]
        assert not unchecked, f"{unchecked} were tried on no input: {report}"
        return report


def _parameters(cls, fn):
    """`(argnames, values, ids)` a suite's test is parametrized with; None if it takes no case."""
    arguments = inspect.signature(fn).parameters
    cases = cls.cases
    if getattr(fn, "convex_only", False):
        cases = [c for c in cases if c.convex and c.projection]
    if "case" in arguments:
        values = [
            pytest.param(c, marks=pytest.mark.long_on(*c.long_on)) if c.long_on else c
            for c in cases
        ]
        return "case", values, [str(c) for c in cases]
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


class PropertySuite:
    cases: list = []

    def test_properties(self, case):
        """Shape, dtype, finiteness, feasibility, the reference, idempotence; every dtype."""
        kept = ("idempotent", "unchanged")
        case.check([p for p in EAGER if case.idempotent or p not in kept])

    @convex_only
    def test_nonexpansive_and_optimal(self, case):
        case.check(["nonexpansive", "optimal"], dtypes=("float32", "float64"))

    def test_compiled_matches_eager(self, case):
        """The backend's compiler gives the eager result; torch.compile traces one graph."""
        case.check(["jit", "graph_break"], dtypes=("float32",), examples=max(5, EXAMPLES // 2))

    def test_serialization_and_empty(self, case):
        case.check(["serialization", "empty"])
