"""The benchmarks compare like with like: every constraint has a case, and each twin reaches the same set.

The benchmark cases are the registry's example variants (`benchmarks/cases.py`
loops over `kconstraints._registry.SPECS`); each is timed against its twins, other
libraries' ways to keep a weight in the same set: `keras.constraints`,
`optax.projections` (JAX), a `torch.nn.utils.parametrizations` (torch) or
`keras.layers.SpectralNormalization`. The timings are fair only if both
sides compute the same thing, which these tests check on the active backend.
The harness itself (timing, report, command line) is tested by
`benchmarks/test_harness.py`, in the `bench_smoke` nox session.
"""

import keras
import numpy as np
import pytest

import kconstraints as kc
from benchmarks.cases import CPU_MAX_SIZE, MAX_SIZE, TWINS, registry_cases
from kconstraints._registry import SPECS
from tests.backend import BACKEND

# Dense kernels (input_dim, units), tall and square, and a Conv2D kernel.
SHAPES = {"dense": (6, 5), "square": (5, 5), "conv2d": (3, 3, 4, 4)}
CASES = registry_cases()
CASE_TWINS = [(case, twin) for case in CASES for twin in case.twins_on(BACKEND)]


def exported_constraints():
    return sorted(
        name
        for name in kc.__all__
        if isinstance(getattr(kc, name), type)
        and issubclass(getattr(kc, name), kc.Constraint)
        and name != "Constraint"
    )


def gaussian(shape, seed=3):
    return (2 * np.random.default_rng(seed).normal(size=shape)).astype("float32")


def separated(shape, seed=3):
    """A kernel whose reshaped matrix `(-1, units)` has singular values 4, 1, 1/4, ...

    Power iteration (torch's `spectral_norm`, Keras's `SpectralNormalization`)
    converges at the rate of the two largest singular values' ratio: here
    1/4, so their estimate of the norm is exact to float32 after a few steps.
    """
    rng = np.random.default_rng(seed)
    units = shape[-1]
    u, _ = np.linalg.qr(rng.normal(size=(int(np.prod(shape[:-1])), units)))
    v, _ = np.linalg.qr(rng.normal(size=(units, units)))
    s = 4.0 ** (1 - np.arange(units))
    return ((u * s) @ v.T).reshape(shape).astype("float32")


def project(constraint, w):
    return keras.ops.convert_to_numpy(constraint(keras.ops.convert_to_tensor(w)))


def test_every_exported_constraint_has_a_case():
    missing = set(exported_constraints()) - {c.name.partition("[")[0] for c in CASES}
    assert not missing, f"give {sorted(missing)} `examples` in its @register(...)"


def test_every_registry_variant_is_a_case():
    variants = [name for spec in SPECS for name in spec.examples]
    assert variants, "the registry lists no examples"
    assert [c.name for c in CASES] == variants


@pytest.mark.parametrize("table", ["TWINS", "MAX_SIZE", "CPU_MAX_SIZE"])
def test_the_benchmarks_own_tables_name_registry_variants(table):
    """No stale entries: a renamed or removed variant must leave benchmarks/cases.py too."""
    keys = {"TWINS": TWINS, "MAX_SIZE": MAX_SIZE, "CPU_MAX_SIZE": CPU_MAX_SIZE}[table]
    stale = set(keys) - {name for spec in SPECS for name in spec.examples}
    assert not stale, f"benchmarks/cases.py {table} names no registry variant: {sorted(stale)}"


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_builds_the_constraint_it_is_named_after(case, shape):
    constraint = case.make(shape)
    if constraint is None:
        # Only matrix constraints that refuse the kernel leave it free: the
        # square-matrix ones (Symmetric, PSD) a tall one, Radial a Dense one.
        assert case.family == "matrix", (case.name, shape)
        with pytest.raises(ValueError):
            project(case.make(SHAPES["conv2d"]), gaussian(shape))
        return
    assert case.name.partition("[")[0] == type(constraint).__name__
    w = gaussian(shape)
    assert project(constraint, w).shape == shape


def _projection_twins():
    return [(c, t) for c, t in CASE_TWINS if t.make is not None]


def _other_twins():
    return [(c, t) for c, t in CASE_TWINS if t.make is None]


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(
    "case, twin", _projection_twins(), ids=[f"{c.name}-{t.library}" for c, t in _projection_twins()]
)
def test_projection_twin_computes_the_same_projection(case, twin, shape):
    """A Keras constraint or an optax projection returns the case's own result."""
    constraint = case.make(shape)
    if constraint is None:
        pytest.skip(f"{case.name} does not apply to a {shape} kernel")
    if twin.library == "optax":
        pytest.importorskip("optax", reason="optax is the reference (dependency group ref-jax)")
    w = gaussian(shape)
    expected = project(constraint, w)
    assert not np.allclose(expected, w, atol=1e-3), "start outside the set"
    got = twin.make(shape, constraint)(keras.ops.convert_to_tensor(w))
    got = keras.ops.convert_to_numpy(got)
    # Keras divides by `norm + 1e-7`: equal up to that epsilon.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=twin.name)


def torch_parametrized(twin, w):
    """The Keras-layout kernel that `twin` makes of `w` on a torch `nn.Linear`."""
    import torch

    linear = torch.nn.Linear(*w.shape, bias=False)  # weight (units, input_dim) = w.T
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(w.T.copy()))
    twin.parametrize(linear)
    with torch.no_grad():
        return linear.weight.numpy().T


def keras_wrapped(twin, w, steps=8):
    """The kernel a Keras layer wrapper leaves after `steps` training calls on a layer with `w`."""
    if w.ndim == 2:
        layer, x = keras.layers.Dense(w.shape[1], use_bias=False), np.ones((1, w.shape[0]))
    else:
        layer = keras.layers.Conv2D(w.shape[-1], w.shape[:2], use_bias=False)
        x = np.ones((1, *w.shape[:3]))
    wrapper = twin.wrapper(layer)
    wrapper.build(x.shape)
    layer.kernel.assign(w)
    for _ in range(steps):
        wrapper(x.astype("float32"), training=True)
    return keras.ops.convert_to_numpy(layer.kernel)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize(
    "case, twin", _other_twins(), ids=[f"{c.name}-{t.library}" for c, t in _other_twins()]
)
def test_parametrization_twin_reaches_the_same_set(case, twin, shape):
    """A torch parametrization or a Keras wrapper lands in the case's set.

    Neither is a projection, so the point differs: torch's `orthogonal`
    orthogonalizes by QR, not by the polar factor, and `spectral_norm` and
    `SpectralNormalization` divide by the norm even when it is below the
    bound. What the train step then holds is a kernel of the same set, which
    the case's projection leaves where it is.
    """
    if twin.parametrize is not None and len(shape) != 2:
        pytest.skip("torch parametrizations are timed on the plain-torch MLP's Linear layers")
    constraint = case.make(shape)
    w = separated(shape)
    assert not np.allclose(project(constraint, w), w, atol=1e-3), "start outside the set"
    if twin.parametrize is not None:
        got = torch_parametrized(twin, w)
    else:
        got = keras_wrapped(twin, w)
    assert got.shape == shape
    np.testing.assert_allclose(project(constraint, got), got, rtol=1e-5, atol=1e-5)
