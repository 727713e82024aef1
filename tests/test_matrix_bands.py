"""matrix.py, second part: SingularValueBand, EigenBand (and PSD as its case) and Skew.

Kept apart from tests/test_matrix.py so each file stays readable; the
references are float64 NumPy SVD/eigh in tests/references.py.
"""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled, gradient, graph_breaks, reset_compiler
from tests.helpers import param_id, sample, tensor, to_np
from tests.models import data
from tests.properties import Case, PropertySuite
from tests.references import (
    eigen_band,
    per_matrix,
    polar,
    psd,
    singular_value_band,
    skew,
)

TALL, WIDE, CONV = (8, 5), (5, 8), (3, 3, 2, 4)
# A band with min_value > 0 has no unique nearest point for a singular matrix
# (the null vectors the SVD picks decide it), and "ties" inputs are often singular.
NO_TIES = ("normal", "large")

CASES = [
    Case(kc.SingularValueBand(0.0, 1.0), TALL, per_matrix(singular_value_band(0.0, 1.0))),
    Case(
        kc.SingularValueBand(0.5, 2.0),
        CONV,
        per_matrix(singular_value_band(0.5, 2.0)),
        convex=False,
        kinds=NO_TIES,
    ),
    Case(
        kc.SingularValueBand(0.8, None, batched=True),
        (2, 4, 7),
        per_matrix(singular_value_band(0.8), batched=True),
        convex=False,
        kinds=NO_TIES,
    ),
    Case(kc.EigenBand(-0.5, 0.5), (2, 5, 5), per_matrix(eigen_band(-0.5, 0.5), batched=True)),
    Case(kc.EigenBand(min_value=0.1), (4, 4), per_matrix(eigen_band(0.1), batched=True)),
    Case(kc.Skew(), (2, 4, 4), per_matrix(skew, batched=True)),
]


class TestBandProperties(PropertySuite):
    cases = CASES


# ------------------------------------------------ every shape against NumPy

SHAPES = [(TALL, False), (WIDE, False), ((6, 6), False), (CONV, False), (CONV, True)]
BANDS = [(0.0, 0.5), (0.3, 1.5), (1.2, None), (0.7, 0.7)]


@pytest.mark.parametrize("shape, batched", SHAPES, ids=[f"{s}-batched={b}" for s, b in SHAPES])
@pytest.mark.parametrize("low, high", BANDS, ids=str)
def test_singular_value_band_matches_numpy_on_every_shape(low, high, shape, batched):
    w = sample(shape, "normal", seed=31)
    out = to_np(kc.SingularValueBand(low, high, batched=batched)(tensor(w)))
    want = per_matrix(singular_value_band(low, high), batched)(w)
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_the_band_from_zero_is_spectral_norm_and_a_point_band_is_orthogonal():
    w = tensor(sample(CONV, "normal", seed=32))
    np.testing.assert_allclose(
        to_np(kc.SingularValueBand(0.0, 0.5)(w)), to_np(kc.SpectralNorm(0.5)(w)), atol=1e-6
    )
    np.testing.assert_allclose(
        to_np(kc.SingularValueBand(2.0, 2.0)(w)), to_np(kc.Orthogonal(2.0)(w)), atol=1e-5
    )
    np.testing.assert_allclose(
        to_np(kc.SingularValueBand(2.0, 2.0)(w)), per_matrix(polar(2.0))(to_np(w)), atol=1e-5
    )


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)], ids=str)
def test_zero_singular_values_rise_to_the_floor(shape):
    """Rank 2 of 4: the two zero singular values come out at min_value, the others clipped."""
    rng = np.random.default_rng(33)
    w = rng.normal(size=(shape[0], 2)) @ rng.normal(size=(2, shape[1]))
    s_in = np.linalg.svd(w, compute_uv=False)
    out = to_np(kc.SingularValueBand(0.5, 3.0)(tensor(w)))
    s_out = np.linalg.svd(out, compute_uv=False)
    np.testing.assert_allclose(np.sort(s_out), np.sort(np.clip(s_in, 0.5, 3.0)), atol=1e-5)
    # A nearest point: the distance is that of the clipped spectrum (von Neumann).
    want = np.sqrt(np.sum((s_in - np.clip(s_in, 0.5, 3.0)) ** 2))
    np.testing.assert_allclose(np.linalg.norm(out - w), want, rtol=1e-5)


def test_a_zero_matrix_goes_to_the_floor_sphere():
    out = to_np(kc.SingularValueBand(0.5, 1.0)(tensor(np.zeros((5, 3)))))
    np.testing.assert_allclose(np.linalg.svd(out, compute_uv=False), 0.5, atol=1e-6)


@pytest.mark.parametrize(
    "c, w",
    [
        (kc.SingularValueBand(0.5, 2.0), sample((6, 4), "normal", seed=34)),
        (kc.EigenBand(-1.0, 1.0), np.diag([-1.0, 0.25, 1.0]) + 0.0),
        (kc.PSD(), np.eye(3)),
        (kc.Skew(), np.array([[0.0, 0.3], [-0.3, 0.0]])),
    ],
    ids=repr,
)
def test_a_weight_in_the_set_is_unchanged_bit_for_bit(c, w):
    if isinstance(c, kc.SingularValueBand):  # rescale into the band first
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        w = (u * np.linspace(0.6, 1.9, s.size)) @ vt
    w32 = w.astype("float32")
    np.testing.assert_array_equal(to_np(c(tensor(w32))), w32)


# ------------------------------------------------------------- EigenBand, PSD


@pytest.mark.parametrize("low, high", [(0.2, None), (None, -0.1), (-0.3, 0.4)], ids=str)
@pytest.mark.parametrize("shape", [(6, 6), (2, 3, 4, 4)], ids=str)
def test_eigen_band_matches_numpy_and_is_exactly_symmetric(low, high, shape):
    w = sample(shape, "normal", seed=35)
    out = to_np(kc.EigenBand(low, high)(tensor(w)))
    np.testing.assert_allclose(out, per_matrix(eigen_band(low, high), batched=True)(w), atol=2e-5)
    np.testing.assert_array_equal(out, np.swapaxes(out, -1, -2))
    lam = np.linalg.eigvalsh(out)
    assert lam.min() >= (-np.inf if low is None else low) - 1e-5
    assert lam.max() <= (np.inf if high is None else high) + 1e-5


def test_psd_is_the_band_from_zero_and_keeps_its_empty_config():
    w = tensor(sample((3, 5, 5), "normal", seed=36))
    assert isinstance(kc.PSD(), kc.EigenBand)
    assert kc.PSD().get_config() == {} and repr(kc.PSD()) == "PSD()"
    assert type(kc.deserialize(kc.serialize(kc.PSD()))) is kc.PSD
    np.testing.assert_array_equal(to_np(kc.PSD()(w)), to_np(kc.EigenBand(min_value=0.0)(w)))
    np.testing.assert_allclose(to_np(kc.PSD()(w)), per_matrix(psd, batched=True)(to_np(w)), 0, 2e-5)


def test_a_point_band_gives_the_scaled_identity():
    out = to_np(kc.EigenBand(0.5, 0.5)(tensor(sample((4, 4), "normal", seed=37))))
    np.testing.assert_allclose(out, 0.5 * np.eye(4), atol=1e-6)


# ------------------------------------------------------------------- Skew


@pytest.mark.parametrize("shape", [(5, 5), (2, 3, 4, 4)], ids=str)
def test_skew_matches_numpy_and_is_exactly_skew(shape):
    w = sample(shape, "normal", seed=38)
    out = to_np(kc.Skew()(tensor(w)))
    np.testing.assert_allclose(out, per_matrix(skew, batched=True)(w), atol=1e-6)
    np.testing.assert_array_equal(out, -np.swapaxes(out, -1, -2))
    assert not np.diagonal(out, axis1=-2, axis2=-1).any()


def test_skew_and_symmetric_parts_add_up_to_the_weight():
    w = sample((6, 6), "normal", seed=39)
    parts = to_np(kc.Skew()(tensor(w))) + to_np(kc.Symmetric()(tensor(w)))
    np.testing.assert_allclose(parts, w.astype("float32"), atol=1e-6)


# -------------------------------------------------------- Penalty and saving

PENALIZED = [
    (kc.SingularValueBand(0.5, 1.0), per_matrix(singular_value_band(0.5, 1.0))),
    (kc.EigenBand(-0.2, 0.3), per_matrix(eigen_band(-0.2, 0.3))),
    (kc.Skew(), skew),
]


@pytest.mark.parametrize("c, ref", PENALIZED, ids=param_id)
def test_penalty_is_the_squared_distance_and_its_gradient(c, ref):
    w = sample((5, 5), "normal", seed=40)
    with float64_enabled():
        value = float(to_np(kc.Penalty(c, strength=0.3)(tensor(w, "float64"))))
        grad = to_np(gradient(kc.Penalty(c, strength=0.3), tensor(w, "float64")))
    np.testing.assert_allclose(value, 0.3 * np.sum((w - ref(w)) ** 2), rtol=1e-10)
    np.testing.assert_allclose(grad, 0.6 * (w - ref(w)), rtol=0, atol=1e-10)
    assert np.abs(grad).max() > 0.1


def _band_model(constrained):
    reset_compiler()  # each model compiled afresh: the counts are comparable
    keras.utils.set_random_seed(0)
    constraints = [
        kc.SingularValueBand(0.5, 1.5),
        kc.EigenBand(0.1, 2.0),
        kc.Skew(),
        kc.SingularValueBand(0.2, None),
    ]
    layers = [
        keras.layers.Dense(
            6 if i < 3 else 1,
            kernel_constraint=c if constrained else None,
            kernel_regularizer=kc.Penalty(kc.Skew(), 0.1) if constrained and i == 0 else None,
        )
        for i, c in enumerate(constraints)
    ]
    model = keras.Sequential([keras.Input((6,)), *layers])
    model.compile("sgd", "mse", jit_compile=True)
    with graph_breaks() as breaks:
        model.fit(*data((6,)), epochs=1, verbose=0)
    assert model.jit_compile
    return model, breaks[0]


def test_a_compiled_fit_adds_no_graph_break_and_the_model_loads_in_safe_mode(tmp_path):
    # Keras's own torch train step breaks the graph (loss.backward(), the
    # optimizer): the constraints must add none to that count.
    model, breaks = _band_model(constrained=True)
    assert breaks == _band_model(constrained=False)[1]
    path = tmp_path / "bands.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(b.kernel_constraint) is type(a.kernel_constraint)
        assert b.kernel_constraint.get_config() == a.kernel_constraint.get_config()
    x = data((6,), seed=8)[0]
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=1e-6, atol=1e-6)
    kernels = [to_np(layer.kernel) for layer in model.layers]
    assert np.linalg.svd(kernels[0], compute_uv=False).min() >= 0.5 - 1e-5
    assert np.linalg.eigvalsh(kernels[1]).min() >= 0.1 - 1e-5
    np.testing.assert_array_equal(kernels[2], -kernels[2].T)


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.SingularValueBand(-0.1, 1.0), r"SingularValueBand.*min_value.*-0\.1"),
        (lambda: kc.SingularValueBand(0.0, -1.0), r"SingularValueBand.*max_value.*-1"),
        (lambda: kc.SingularValueBand(2.0, 1.0), r"SingularValueBand.*min_value.*<=.*2\.0.*1\.0"),
        (lambda: kc.SingularValueBand(0.0, None), r"SingularValueBand.*max_value.*None.*> 0"),
        (lambda: kc.SingularValueBand(0.5, float("inf")), r"SingularValueBand.*max_value.*inf"),
        (lambda: kc.SingularValueBand(batched="yes"), r"SingularValueBand.*batched.*'yes'"),
        (lambda: kc.SingularValueBand("1", 2.0), r"SingularValueBand.*min_value.*'1'"),
        (lambda: kc.EigenBand(), r"EigenBand.*at least one of `min_value` and `max_value`"),
        (lambda: kc.EigenBand(1.0, -1.0), r"EigenBand.*min_value.*<=.*1\.0.*-1\.0"),
        (lambda: kc.EigenBand(float("nan")), r"EigenBand.*min_value.*nan"),
        (lambda: kc.EigenBand(max_value=[1.0]), r"EigenBand.*max_value.*\[1\.0\]"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("c", [kc.EigenBand(0.0, 1.0), kc.Skew()], ids=repr)
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (4,)], ids=str)
def test_non_square_input_names_the_shape(c, shape):
    name = type(c).__name__
    with pytest.raises(ValueError, match=rf"{name}.*square.*{re_shape(shape)}"):
        c(tensor(np.ones(shape)))


def test_a_vector_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"SingularValueBand.*matri.*\(5,\)"):
        kc.SingularValueBand()(tensor(np.ones(5)))
