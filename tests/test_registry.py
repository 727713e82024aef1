"""The registry is the one declaration of a constraint, and every list follows it.

`kconstraints._registry.SPECS` is filled by each class's `@register(...)`;
the README, the docs pages and the package's exports are written from it by
`python -m docs.catalogue`, and the degenerate-weight tests and the
benchmark cases loop over it. These tests fail when one of them drifts.
"""

import importlib
import pathlib

import keras
import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from benchmarks.cases import registry_cases
from docs import catalogue
from kconstraints import _registry
from kconstraints._registry import SPECS, constraint_specs, register, spec_of
from kconstraints.testing import check_constraint, per_shape, varied_shapes
from tests.properties import EXAMPLES, PropertySuite

TESTS = pathlib.Path(__file__).parent
# The kernels the benchmarks build constraints for: Dense, square Dense, Conv2D.
KERNELS = [(6, 5), (5, 5), (3, 3, 4, 4)]


def exported_classes():
    return {
        getattr(kc, name)
        for name in kc.__all__
        if isinstance(getattr(kc, name), type) and getattr(kc, name) is not kc.Constraint
    }


def test_exports_are_the_registered_classes_and_the_tools():
    registered = {spec.cls for spec in SPECS}
    assert exported_classes() - {kc.Variable} == registered
    assert len({spec.name for spec in SPECS}) == len(SPECS), "two classes of one name"


def test_generated_lists_match_the_registry():
    stale = catalogue.stale_files()
    assert not stale, f"run `python -m docs.catalogue`: {sorted(stale)} are out of date"


def property_cases():
    """Every `Case` of every property suite in the test modules."""
    cases = []
    for path in sorted(TESTS.glob("test_*.py")):
        if "PropertySuite" not in path.read_text():
            continue
        module = importlib.import_module(f"tests.{path.stem}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, PropertySuite):
                cases += value.cases
    return cases


def test_every_constraint_of_the_package_says_what_it_is_for():
    """Its `uses` are the rows of the docs' "Which constraint?" table."""
    missing = [s.name for s in catalogue.specs() if not s.uses]
    assert not missing, f"no `uses=` in their @register: {missing}"


def test_every_registered_constraint_has_a_property_case():
    covered = {type(case.constraint) for case in property_cases()}
    missing = sorted(spec.name for spec in constraint_specs() if spec.cls not in covered)
    assert not missing, f"add a property Case (tests/properties.py) for {missing}"


def refuses(constraint, shape):
    """True when `constraint` raises a ValueError on a weight of `shape`: it does not apply there."""
    try:
        constraint(np.zeros(shape, "float32"))
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("spec", constraint_specs(), ids=lambda s: s.name)
def test_each_example_builds_its_class_for_its_shape_and_the_kernels(spec):
    assert spec.examples, f"{spec.name} declares no example"
    for name, make in spec.examples.items():
        assert name.partition("[")[0] == spec.name
        assert isinstance(make(spec.shape), spec.cls), (name, spec.shape)
        for shape in KERNELS:
            c = make(shape)
            # None only where the class refuses the kernel: a tall one for a
            # square-matrix constraint, a Dense one for a Conv-only one (Radial).
            free = c is None and refuses(make(spec.shape), shape)
            assert isinstance(c, spec.cls) or free, (name, shape)


def example_variants():
    return [
        (name, make, spec) for spec in constraint_specs() for name, make in spec.examples.items()
    ]


@pytest.mark.parametrize(
    "name, make, spec", example_variants(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_registry_example_holds_its_properties_at_varied_shapes(name, make, spec):
    """Each declared example, built per shape: a size-1 axis, a long axis, tall and wide.

    What the declaration promises is checked: an exact projection is
    idempotent and keeps a feasible weight, a convex one's also non-expansive
    and optimal.
    """
    shapes = [s for s in varied_shapes(spec.shape) if make(s) is not None]
    properties = ["shape", "dtype", "finite"]
    if spec.exact is True:
        properties += ["idempotent", "unchanged"]
        if spec.convex:
            properties += ["nonexpansive", "optimal"]
    report = check_constraint(
        per_shape(make),
        spec.shape,
        shapes=shapes,
        convex=spec.convex and spec.exact is True,
        properties=properties,
        dtypes=("float32", "float64"),
        examples=EXAMPLES,
    )
    assert all(report.inputs[p] > 0 for p in properties), report


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_declared_convexity_and_exactness_are_consistent(spec):
    assert spec.family in _registry.FAMILIES
    assert spec.exact is True or spec.exact.strip(), spec.name
    if spec.family == "soft":
        assert spec.examples == {} and spec.exact is not True
    assert spec.summary and "\n" not in spec.summary


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"family": "vector"}, r"register: `family` must be one of .* got 'vector'"),
        ({"exact": False}, r"register: `exact` must be True or a sentence, got False"),
        ({"exact": ""}, r"register: `exact` must be True or a sentence, got ''"),
    ],
)
def test_a_bad_declaration_is_an_error_naming_the_argument(arguments, match):
    declaration = {
        "family": "elementwise",
        "convex": True,
        "exact": True,
        "summary": "w",
        "examples": {},
        **arguments,
    }
    with pytest.raises(ValueError, match=match):
        register(**declaration)


def test_spec_of_an_unregistered_class_names_it():
    class Loose(kc.Constraint):
        pass

    with pytest.raises(KeyError, match="Loose is not registered"):
        spec_of(Loose)


@pytest.fixture
def new_constraint():
    """A 31st constraint written as CONTRIBUTING.md says: one class with its declaration.

    It claims to live in `kconstraints.bounds`, as one added there would.
    """

    @register(
        family="elementwise",
        convex=True,
        exact=True,
        summary="w <= 0",
        examples=lambda shape: NonPos(),
    )
    class NonPos(kc.Constraint):
        """The orthant `w <= 0`."""

        __module__ = "kconstraints.bounds"
        elementwise = True

        def project(self, w):
            return ops.minimum(w, 0)

    yield NonPos
    _registry.unregister("NonPos")


def test_a_new_constraint_is_found_in_every_generated_list(new_constraint):
    from tests import test_degenerate

    specs = catalogue.specs()
    assert "`NonPos()` | w <= 0 | `bounds` |" in catalogue.readme_table(specs)
    assert "`NonPos`" in catalogue.index_table(specs).splitlines()[2]  # the elementwise row
    assert "members: [NonNeg, Clip, NonPos]" in catalogue.reference_sections(specs)
    assert "from kconstraints.bounds import Clip, NonNeg, NonPos" in catalogue.init_imports(specs)
    assert '"NonPos"' in catalogue.init_all(specs)
    assert stale_files_name_the_init_and_the_docs()
    assert kc.get("non_pos").__class__ is new_constraint
    assert any(type(c) is new_constraint for c, _ in test_degenerate._registry_empties())
    assert any(type(c) is new_constraint for c, _, _ in test_degenerate._registry_sliced())
    assert "NonPos" in [case.name for case in registry_cases()]  # the benchmark cases
    w = ops.convert_to_tensor(np.array([-1.0, 2.0], "float32"))
    np.testing.assert_array_equal(ops.convert_to_numpy(kc.get("NonPos")(w)), [-1.0, 0.0])


def stale_files_name_the_init_and_the_docs():
    stale = set(catalogue.stale_files())
    return stale == {
        "README.md",
        "docs/index.md",
        "docs/reference/constraints.md",
        "kconstraints/__init__.py",
    }


def test_a_removed_constraint_leaves_the_registry(new_constraint):
    _registry.unregister("NonPos")
    assert "NonPos" not in _registry.NAMES and "non_pos" not in _registry.NAMES
    assert all(spec.name != "NonPos" for spec in SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_registered_class_loads_in_keras_safe_mode(spec):
    assert keras.saving.get_registered_object(f"kconstraints>{spec.name}") is spec.cls


def test_a_new_constraint_loads_in_safe_mode(new_constraint):
    config = kc.serialize(new_constraint())
    assert type(keras.saving.deserialize_keras_object(config, safe_mode=True)) is new_constraint
