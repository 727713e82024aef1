"""combine.py: Compose and Intersection; and every issue-3 constraint inside one trained, saved model."""

import itertools
import json

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.helpers import float64_enabled, jit_whole, sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.test_norm import simplex_ref
from tests.test_order import monotonic_ref
from tests.test_training import assert_feasible, constrained, data, push_outside

MASK = sample((6, 4), "ties", seed=60) >= 0


def nonneg_then_max_norm(max_value, axis):
    """The exact projection onto {w >= 0} ∩ {||w_slice|| <= max_value}."""

    def ref(w):
        w = np.maximum(w, 0)
        n = np.sqrt(np.sum(w**2, axis=axis, keepdims=True))
        return w * np.where(n > max_value, max_value / np.maximum(n, 1e-300), 1.0)

    return ref


def box_and_mean_ref(low, high, mean):
    """The exact projection onto {low <= w <= high, mean(w) = mean}: clip(w - lam), lam by bisection."""

    def ref(w):
        lo, hi = w.min() - high, w.max() - low
        for _ in range(200):
            lam = (lo + hi) / 2
            lo, hi = (lam, hi) if np.clip(w - lam, low, high).mean() > mean else (lo, lam)
        return np.clip(w - (lo + hi) / 2, low, high)

    return ref


class TestCombineProperties(PropertySuite):
    cases = [
        Case(kc.Compose([kc.NonNeg(), kc.MaxNorm(1.0)]), (6, 4), nonneg_then_max_norm(1.0, 0)),
        Case(
            kc.Compose([kc.Mask(MASK), kc.MaxNorm(2.0, axis=None)]),
            (6, 4),
            lambda w: nonneg_then_max_norm(2.0, None)(np.abs(w) * MASK) * np.sign(w),
        ),
        # Bounded isotonic regression is the clipped isotonic regression.
        Case(
            kc.Compose([kc.Monotonic(), kc.Clip(0.0, 1.0)]),
            (8, 3),
            lambda w: np.clip(monotonic_ref(0)(w), 0.0, 1.0),
        ),
        Case(
            kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], iterations=2),
            (6, 4),
            nonneg_then_max_norm(1.0, 0),
        ),
        Case(
            kc.Intersection([kc.Clip(-1.0, 1.0), kc.Mask(MASK)], iterations=1),
            (6, 4),
            lambda w: np.clip(w, -1.0, 1.0) * MASK,
        ),
    ]


# The error of Dykstra's algorithm against an exact projection, as the sweeps grow.
CONVERGENCE = [
    # Non-negative and summing to 1 is the simplex, which Simplex projects onto exactly.
    ("simplex", kc.NonNeg(), kc.CenterAround(1.0 / 8, axis=0), simplex_ref(1.0, 0)),
    ("box-mean", kc.Clip(-0.5, 0.5), kc.CenterAround(0.2), box_and_mean_ref(-0.5, 0.5, 0.2)),
    # The ball first: the first sweep is not exact, the limit is.
    ("ball-cone", kc.MaxNorm(1.0), kc.NonNeg(), nonneg_then_max_norm(1.0, 0)),
]
SWEEPS = (1, 4, 16, 64, 256)


@pytest.mark.parametrize(
    "first, second, exact", [c[1:] for c in CONVERGENCE], ids=[c[0] for c in CONVERGENCE]
)
def test_dykstra_error_falls_to_the_exact_projection(first, second, exact):
    w = sample((8, 5), "normal", seed=61) * 2
    want = exact(w)
    with float64_enabled():
        x = tensor(w, "float64")
        errors = [
            np.abs(to_np(kc.Intersection([first, second], k)(x)) - want).max() for k in SWEEPS
        ]
    assert errors[0] > 1e-2, f"the first sweep is already exact, nothing is measured: {errors}"
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] <= 1e-9, errors


def test_dykstra_is_exact_after_one_sweep_for_a_cone_then_a_ball():
    w = sample((8, 5), "normal", seed=62) * 2
    with float64_enabled():
        got = to_np(kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], 1)(tensor(w, "float64")))
    np.testing.assert_allclose(got, nonneg_then_max_norm(1.0, 0)(w), rtol=0, atol=1e-14)


def test_a_point_of_the_intersection_is_returned_unchanged():
    z = simplex_ref(1.0, 0)(sample((8, 5), "normal", seed=63))
    c = kc.Intersection([kc.NonNeg(), kc.CenterAround(1.0 / 8, axis=0)], 3)
    with float64_enabled():
        np.testing.assert_allclose(to_np(c(tensor(z, "float64"))), z, rtol=0, atol=1e-15)


def test_nested_constraints_round_trip_through_json():
    c = kc.Compose(
        [
            kc.Partial(kc.Compose([kc.NonNeg(), kc.Clip(max_value=0.5)]), MASK),
            kc.Intersection([kc.Monotonic(), kc.L1Ball(2.0)], iterations=7),
        ]
    )
    clone = kc.deserialize(json.loads(json.dumps(kc.serialize(c))))
    assert clone.get_config() == c.get_config()
    assert clone.constraints[1].iterations == 7
    w = tensor(sample((6, 4), "normal", seed=64))
    np.testing.assert_array_equal(to_np(clone(w)), to_np(c(w)))


def test_elementwise_only_when_every_member_is():
    assert kc.Compose([kc.NonNeg(), kc.Clip(-1, 1)]).elementwise
    assert kc.Intersection([kc.NonNeg(), kc.Mask([1, 0])]).elementwise
    assert not kc.Compose([kc.NonNeg(), kc.MaxNorm()]).elementwise
    kc.Partial(kc.Compose([kc.NonNeg(), kc.Clip(-1, 1)]), [1, 0])
    with pytest.raises(ValueError, match="Partial.*Intersection"):
        kc.Partial(kc.Intersection([kc.NonNeg(), kc.MaxNorm()]), [1, 0])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.Compose([]), "Compose: `constraints` must be a non-empty list"),
        (lambda: kc.Compose(kc.NonNeg()), "Compose: `constraints` must be a non-empty list"),
        (lambda: kc.Intersection(["no_such"]), "no_such"),
        (lambda: kc.Intersection([kc.NonNeg()], iterations=0), "Intersection: `iterations`.*0"),
        (lambda: kc.Intersection([kc.NonNeg()], iterations=2.5), "Intersection: `iterations`"),
        (lambda: kc.Intersection([kc.NonNeg()], iterations=True), "Intersection: `iterations`"),
    ],
)
def test_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------- every issue-3 constraint in one model

ONE_GRAPH = [
    kc.Simplex(axis=0),
    kc.L1Ball(1.0, axis=[0, 1]),
    kc.Monotonic(axis=-1, increasing=False),
    kc.Mask(MASK),
    kc.Fixed(MASK, 0.5),
    kc.Partial(kc.NonNeg(), MASK),
    # Not Clip: value.py's Clip converts NumPy bounds while tracing, a torch graph break.
    kc.Compose([kc.Monotonic(), kc.NonNeg()]),
    kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], iterations=2),
]


def test_every_constraint_compiles_into_one_graph():
    # One compiled function for all of them: torch.compile takes seconds per function.
    weights = [tensor(sample((6, 4), "normal", seed=65 + i)) for i in range(len(ONE_GRAPH))]
    penalty = kc.Penalty(kc.Monotonic(), strength=0.5)

    def everything(*ws):
        return [c(w) for c, w in zip(ONE_GRAPH, ws, strict=True)] + [penalty(ws[0])]

    compiled = jit_whole(everything)(*weights)
    for got, want in zip(compiled, everything(*weights), strict=True):
        np.testing.assert_allclose(to_np(got), to_np(want), rtol=0, atol=1e-6)


def issue3_model():
    """Dense layers carrying Simplex, L1Ball, Monotonic, Mask, Fixed, Partial, Compose,
    Intersection and a Penalty; the Partial layer is the input-convex one of background/003."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, kernel_constraint=kc.Simplex(axis=0), name="simplex")(inputs)
    h = keras.layers.Dense(
        8, kernel_constraint=kc.L1Ball(1.0), bias_constraint=kc.Monotonic(), name="l1"
    )(h)
    h = keras.layers.Dense(8, kernel_constraint=kc.Monotonic(axis=0), name="monotonic")(h)
    h = keras.layers.Dense(
        8,
        kernel_constraint=kc.Mask(np.tril(np.ones((8, 8)))),
        bias_constraint=kc.Fixed([1, 1, 0, 0, 0, 0, 0, 0], values=0.5),
        name="masked",
    )(h)
    z_rows = np.r_[np.ones(8), np.zeros(6)][:, None]
    h = keras.layers.Dense(4, kernel_constraint=kc.Partial(kc.NonNeg(), z_rows), name="convex")(
        keras.layers.Concatenate()([h, inputs])
    )
    h = keras.layers.Dense(
        4,
        kernel_constraint=kc.Compose([kc.Monotonic(), kc.Clip(0.0, 1.0)]),
        kernel_regularizer=kc.Penalty(kc.MaxNorm(0.5), strength=0.1),
        name="compose",
    )(h)
    outputs = keras.layers.Dense(
        1, kernel_constraint=kc.Intersection([kc.NonNeg(), kc.MaxNorm(1.0)], 3), name="both"
    )(h)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
def test_fit_keeps_every_constrained_weight_feasible(jit_compile):
    keras.utils.set_random_seed(5)
    model = issue3_model()
    push_outside(model)
    before = {v.path: to_np(v.value) for v in constrained(model)}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", jit_compile=jit_compile)
    x, y = data((6,), seed=6)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert_feasible(model, before)
    convex = to_np(model.get_layer("convex").kernel.value)
    assert convex[:8].min() >= 0 and convex[8:].min() < 0, "z-path non-negative, x-path free"


def test_saved_model_loads_in_safe_mode_with_every_config(tmp_path):
    model = issue3_model()
    path = tmp_path / "issue3.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    attrs = ("kernel_constraint", "bias_constraint", "kernel_regularizer")
    checked = 0
    for a, b in zip(model.layers, loaded.layers, strict=True):
        for attr in attrs:
            ca, cb = getattr(a, attr, None), getattr(b, attr, None)
            assert type(cb) is type(ca), (a.name, attr)
            if ca is not None:
                assert cb.get_config() == ca.get_config()
                checked += 1
    assert checked == 10
    x = data((6,), seed=7)[0]
    np.testing.assert_allclose(to_np(loaded(x)), to_np(model(x)), rtol=1e-6, atol=1e-6)
