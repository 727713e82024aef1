"""Degenerate weights on every constraint: no entries, a 0-d weight, NaN and infinities.

The empty and non-finite weights run over every variant the registry declares
(`kconstraints._registry`), then over arguments its examples do not reach.
"""

import re
import warnings

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints._checks import resolve_axis
from kconstraints._registry import constraint_specs, spec_of
from tests.backend import jit
from tests.helpers import dtype_of, sample, tensor, to_np

BOUNDS = np.array([-1.0, 0.0, 0.5])
MASK = np.array([1, 0, 1])


# Every registered constraint, each variant built for its example shape, on
# that shape with its first axis emptied (the arguments below empty others).
def _registry_empties():
    out = []
    for spec in constraint_specs():
        for make in spec.examples.values():
            c = make(spec.shape)
            out.append((c, (0, *spec.shape[1:])))
    return out


# Arguments the registry's examples do not reach.
EMPTY_ARGUMENTS = [
    (kc.Clip(BOUNDS, BOUNDS + 1), (0, 3)),
    (kc.Hyperplane(), (0, 3)),
    (kc.Halfspace([1.0, 2.0, 3.0], axis=1), (0, 3)),
    (kc.AffineSet([[1.0, 1.0, 1.0]], 1.0, axis=1), (0, 3)),
    (kc.DoublyStochastic(2), (2, 0, 0)),
    (kc.MaxNorm(1.0, axis=[0, 1, 2]), (3, 3, 0, 4)),
    (kc.Simplex(axis=-1), (3, 0)),
    (kc.Monotonic(axis=1), (3, 0)),
    (kc.Monotonic(method="merge"), (0, 3)),
    (kc.TopK(k=2, axis=0), (0, 3)),
    (kc.Symmetric(), (0, 0)),
    (kc.PSD(), (2, 0, 0)),
    (kc.EigenBand(0.1, 1.0), (0, 0)),
    (kc.SingularValueBand(0.5, None, batched=True), (2, 3, 0)),
    (kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], 3), (0, 3)),
    (kc.AOL(), (3, 0, 2)),
]
EMPTY = _registry_empties() + EMPTY_ARGUMENTS


def test_every_registered_constraint_is_tried_on_empty_weights():
    tried = {type(c) for c, _ in EMPTY}
    assert tried == {spec.cls for spec in constraint_specs()}


# Compiled in float32 only: torch.compile takes seconds per constraint on CPU.
@pytest.mark.parametrize(
    "dtype, compiled", [("float16", False), ("float32", False), ("float32", True)], ids=str
)
@pytest.mark.parametrize("c, shape", EMPTY, ids=[f"{c!r}-{s}" for c, s in EMPTY])
def test_a_weight_with_no_entries_comes_back_as_it_is(c, shape, dtype, compiled):
    w = tensor(np.zeros(shape), dtype)
    out = (jit(lambda x: c(x)) if compiled else c)(w)
    assert tuple(out.shape) == shape
    assert dtype_of(out) == dtype


def test_an_empty_weight_has_no_violation_and_no_penalty():
    v = kc.Variable(np.zeros((0, 3)), constraint=kc.Simplex())
    assert kc.violations(v) == {v.path: 0.0}
    assert float(to_np(kc.Penalty(kc.Simplex())(v.value))) == 0.0


# ------------------------------------------------------------------ 0-d weights

SCALAR = [
    (kc.NonNeg(), -2.0, 0.0),
    (kc.Clip(-1.0, 1.0), 3.0, 1.0),
    (kc.CenterAround(0.25), 3.0, 0.25),
    (kc.MaxNorm(1.0, axis=None), -3.0, -1.0),
    (kc.MinMaxNorm(2.0, 3.0, axis=None), 0.5, 2.0),
    (kc.UnitNorm(axis=None), -0.2, -1.0),
    (kc.Simplex(2.0, axis=None), -5.0, 2.0),
    (kc.L1Ball(0.5, axis=None), -3.0, -0.5),
    (kc.TopK(k=1), -3.0, -3.0),
    (kc.TopK(k=0), -3.0, 0.0),
    (kc.Mask(0), 3.0, 0.0),
    (kc.Fixed(1, 4.0), 3.0, 4.0),
    (kc.Compose([kc.NonNeg(), kc.Clip(max_value=0.5)]), 3.0, 0.5),
]


@pytest.mark.parametrize("c, w, want", SCALAR, ids=[repr(s[0]) for s in SCALAR])
def test_a_scalar_weight_is_projected_where_the_set_is_defined_on_it(c, w, want):
    out = c(tensor(w))
    assert tuple(out.shape) == ()
    assert float(to_np(out)) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(
    "c, match",
    [
        (kc.MaxNorm(1.0), r"MaxNorm: `axis`=0 is out of range for a weight of shape \(\)"),
        (kc.Simplex(), r"Simplex: `axis`=0 is out of range for a weight of shape \(\)"),
        (kc.Monotonic(), r"Monotonic: `axis`=0 is out of range for a weight of shape \(\)"),
        (kc.NM(), r"NM: `axis`=0 is out of range for a weight of shape \(\)"),
        (kc.SpectralNorm(), r"SpectralNorm constrains matrices.*shape \(\)"),
        (kc.Orthogonal(), r"Orthogonal constrains matrices.*shape \(\)"),
        (kc.PSD(), r"PSD needs square matrices.*shape \(\)"),
        (kc.Hyperplane(), r"Hyperplane: `axis`=0 is out of range for a weight of shape \(\)"),
        (kc.DoublyStochastic(), r"DoublyStochastic needs square matrices.*shape \(\)"),
        (kc.Skew(), r"Skew needs square matrices.*shape \(\)"),
        (kc.SingularValueBand(), r"SingularValueBand constrains matrices.*shape \(\)"),
        (kc.Mask([1, 0]), r"Mask: `mask` of shape \(2,\) does not broadcast.*\(\)"),
        (kc.ConvSpectralNorm(), r"ConvSpectralNorm needs a Conv1D/2D/3D kernel.*shape \(\)"),
        (kc.AOL(), r"AOL needs a Conv1D/2D/3D kernel.*or a Dense kernel.*shape \(\)"),
    ],
    ids=lambda v: repr(v) if isinstance(v, kc.Constraint) else "",
)
def test_a_scalar_weight_is_a_clear_error_where_the_set_needs_axes(c, match):
    with pytest.raises(ValueError, match=match):
        c(tensor(1.0))


# ---------------------------------------------------------- NaN and infinities


def slice_axes(spec, c, shape):
    """The axes one independent unit of `c` spans on `shape`: () for elementwise constraints."""
    if spec.family == "elementwise":
        return ()
    if spec.family == "slice":
        return resolve_axis(spec.name, "axis", c.axis, shape)
    if spec.family == "combination":
        inner = [(spec_of(type(p)), p) for p in c.constraints]
        return tuple(sorted({a for s, p in inner for a in slice_axes(s, p, shape)}))
    if len(shape) == 3 and getattr(c, "batched", True):  # a stack of matrices
        return (1, 2)
    return tuple(range(len(shape)))  # one matrix, or a kernel as one operator


def _registry_sliced():
    """Every registered variant whose example weight holds more than one independent unit."""
    out = []
    for spec in constraint_specs():
        for make in spec.examples.values():
            c = make(spec.shape)
            axes = slice_axes(spec, c, spec.shape)
            if len(axes) < len(spec.shape):
                out.append((c, spec.shape, axes))
    return out


# (constraint, shape, the axes one slice spans): arguments beyond the registry's examples.
SLICED_ARGUMENTS = [
    (kc.Fixed(np.eye(6, 4), 1.0), (6, 4), ()),
    (kc.CenterAround(0.1, axis=0), (6, 4), (0,)),
    (kc.Hyperplane(None, 1.0), (6, 4), (0,)),
    (kc.Halfspace([1.0, -1.0, 2.0, 0.0], -0.5, axis=1), (6, 4), (1,)),
    (kc.AffineSet([[1.0] * 6, [1.0, 0, 0, 0, 0, -1.0]], [1.0, 0.0]), (6, 4), (0,)),
    (kc.MinMaxNorm(0.5, 1.0, axis=1), (6, 4), (1,)),
    (kc.UnitNorm(axis=[0, 1]), (3, 2, 4), (0, 1)),
    (kc.L1Ball(1.0, axis=1), (6, 4), (1,)),
    (kc.Monotonic(method="merge"), (6, 4), (0,)),
    (kc.TopK(k=2, axis=0), (6, 4), (0,)),
    (kc.NM(1, 2), (6, 4), (0,)),
    (kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], 3), (6, 4), (0,)),
    (kc.EigenBand(-0.5, 0.5), (3, 4, 4), (1, 2)),
]
SLICED = _registry_sliced() + SLICED_ARGUMENTS


def same_slice(shape, axes, index):
    """True where an entry shares `index`'s slice: the same position on every other axis."""
    grid = np.indices(shape)
    keep = [a for a in range(len(shape)) if a not in axes]
    return np.all([grid[a] == index[a] for a in keep], axis=0)


# Compiled with NaN only: torch.compile takes seconds per constraint on CPU.
@pytest.mark.parametrize(
    "bad, compiled",
    [(np.nan, False), (np.inf, False), (-np.inf, False), (np.nan, True)],
    ids=["nan", "inf", "-inf", "nan-jit"],
)
@pytest.mark.parametrize("c, shape, axes", SLICED, ids=[repr(s[0]) for s in SLICED])
def test_a_non_finite_entry_never_reaches_another_slice(c, shape, axes, bad, compiled):
    w = sample(shape, "normal", seed=90) * 2
    index = tuple(s // 2 for s in shape)
    poisoned = w.copy()
    poisoned[index] = bad
    fn = jit(lambda x: c(x)) if compiled else c
    clean, got = to_np(fn(tensor(w))), to_np(fn(tensor(poisoned)))
    others = ~same_slice(shape, axes, index)
    assert others.any()
    np.testing.assert_allclose(got[others], clean[others], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "c, bad, want",
    [
        (kc.NonNeg(), -np.inf, 0.0),
        (kc.NonNeg(), np.inf, np.inf),
        (kc.NonNeg(), np.nan, np.nan),
        (kc.Clip(-1.0, 2.0), np.inf, 2.0),
        (kc.Clip(-1.0, 2.0), -np.inf, -1.0),
        (kc.Clip(-1.0, 2.0), np.nan, np.nan),
        (kc.Mask([0, 1]), np.nan, 0.0),
        (kc.Fixed([1, 0], 3.0), np.inf, 3.0),
    ],
)
def test_elementwise_constraints_treat_infinities_as_numbers_and_keep_nan(c, bad, want):
    out = to_np(c(tensor([bad, 0.25])))
    np.testing.assert_array_equal(out, [want, 0.25])


def test_violations_report_a_non_finite_weight_as_nan():
    good = kc.Variable([[-1.0], [0.5]], constraint=kc.NonNeg(), project=False, name="good")
    bad = kc.Variable([[np.nan], [0.5]], constraint=kc.NonNeg(), project=False, name="bad")
    found = kc.violations([good, bad])
    assert found["good"] == 1.0 and np.isnan(found["bad"])


def test_monitor_logs_nan_and_stops_training_on_a_non_finite_weight():
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(1, kernel_constraint=kc.MaxNorm(1.0))
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    layer.kernel.assign([[np.nan], [0.0], [0.0]])  # NaN weights give NaN gradients: it stays
    monitor = kc.callbacks.ConstraintMonitor(stop_on_nonfinite=True)
    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
    # Recorded, not pytest.warns: that re-emits the backends' own deprecation
    # warnings from this line, where the filters that ignore them do not apply.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=3, verbose=0, callbacks=[monitor])
    stops = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert any(re.search(r"stopping after epoch 1.*kernel.*NaN", m) for m in stops), stops
    assert len(history.history["loss"]) == 1  # stopped after the first epoch
    assert np.isnan(history.history["constraint_violation"][0])
    assert monitor.nonfinite == [layer.kernel.path]
