"""order.py: Monotonic (isotonic regression along an axis)."""

import numpy as np
import pytest

import kconstraints as kc
from kconstraints import _kernels
from tests.backend import float64_enabled, jit
from tests.helpers import dtype_of, sample, tensor, to_np, tol
from tests.properties import Case, PropertySuite
from tests.references import monotonic_ref


class TestMonotonicProperties(PropertySuite):
    cases = [
        Case(kc.Monotonic(), (8, 4), monotonic_ref(0)),
        Case(kc.Monotonic(axis=-1, increasing=False), (5, 9), monotonic_ref(-1, False)),
        Case(kc.Monotonic(axis=1), (3, 5, 2, 2), monotonic_ref(1)),
        Case(kc.Monotonic(axis=0), (12,), monotonic_ref(0)),
        # The merge of sorted blocks, forced on short slices (9 entries: padded to 16).
        Case(
            kc.Monotonic(axis=-1, increasing=False, method="merge"),
            (5, 9),
            monotonic_ref(-1, False),
        ),
    ]


@pytest.mark.parametrize(
    "w, increasing, want",
    [
        ([3.0, 1.0, 2.0], True, [2.0, 2.0, 2.0]),
        ([1.0, 2.0, 3.0], False, [2.0, 2.0, 2.0]),
        ([0.0, 0.0, -3.0, 0.0, 0.0], True, [-1.0, -1.0, -1.0, 0.0, 0.0]),
        ([1e6, -1e6, 5.0, 5.0], True, [0.0, 0.0, 5.0, 5.0]),
        ([2.0, 2.0, 2.0, 2.0], True, [2.0, 2.0, 2.0, 2.0]),
        ([4.0, 3.0, 2.0, 1.0], True, [2.5, 2.5, 2.5, 2.5]),
    ],
)
def test_monotonic_exact_answers(w, increasing, want):
    got = to_np(kc.Monotonic(increasing=increasing)(tensor(w)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("kind", ["normal", "ties", "large"])
def test_ordered_slice_comes_back_bit_for_bit(kind):
    w = np.sort(sample((10, 3), kind, seed=31), axis=0).astype("float32")
    np.testing.assert_array_equal(to_np(kc.Monotonic()(tensor(w))), w)


@pytest.mark.parametrize(
    "method", ["pairwise", pytest.param("merge", marks=pytest.mark.long_on("jax"))]
)
def test_slices_of_300_entries_match_pava(method):
    w = sample((300, 2), "normal", seed=32) + np.linspace(-3, 3, 300)[:, None]
    got = to_np(kc.Monotonic(method=method)(tensor(w)))
    np.testing.assert_allclose(got, monotonic_ref(0)(w), rtol=0, atol=2e-5)


def sklearn_isotonic(w, increasing=True):
    """scikit-learn's IsotonicRegression of each column: a second, outside reference."""
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(increasing=increasing)
    index = np.arange(w.shape[0])
    return np.stack([fit.fit_transform(index, col) for col in w.T], axis=1)


def adversarial(kind, n):
    """(n, 2) float64 slices that stress the merge: its searches, its padding, its pooling."""
    i = np.arange(n, dtype="float64")
    cols = {
        "all-equal": np.full(n, 0.75),
        "one-huge": np.where(i == n // 3, 1e6, np.sin(i)),
        "one-huge-negative": np.where(i == n // 3, -1e6, np.sin(i)),
        "ascending": i / 7,
        "descending": -i / 7,
        "alternating": np.where(i % 2 == 0, 1.0, -1.0) + i / n,
        "sawtooth": (i % 5) - i / n,
        "staircase-down": -np.floor(i / 3) + 0.1 * (i % 3),
        "ties": np.round(np.sin(i) * 2) / 2,
    }[kind]
    rng = np.random.default_rng(n)
    return np.stack([cols, cols[::-1] + rng.normal(size=n) * 1e-3], axis=1)


KINDS = [
    "all-equal",
    "one-huge",
    "one-huge-negative",
    "ascending",
    "descending",
    "alternating",
    "sawtooth",
    "staircase-down",
    "ties",
]


LONG_ON_JAX = (True, "all-equal", 100)
ADVERSARIAL = [
    pytest.param(
        increasing,
        kind,
        n,
        id=f"{'up' if increasing else 'down'}-{kind}-{n}",
        marks=pytest.mark.long_on("jax") if (increasing, kind, n) == LONG_ON_JAX else (),
    )
    for increasing in (True, False)
    for kind in KINDS
    for n in (1, 2, 7, 100)
]


@pytest.mark.parametrize("increasing, kind, n", ADVERSARIAL)
def test_merge_matches_pava_and_sklearn_on_adversarial_slices(kind, n, increasing):
    w = adversarial(kind, n)
    with float64_enabled():
        got = to_np(kc.Monotonic(increasing=increasing, method="merge")(tensor(w, "float64")))
    want = monotonic_ref(0, increasing)(w)
    scale = np.max(np.abs(w))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(got, sklearn_isotonic(w, increasing), rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("kind", ["ascending", "all-equal", "ties"])
def test_merge_keeps_an_ordered_slice_bit_for_bit(kind):
    w = np.sort(adversarial(kind, 50), axis=0).astype("float32")
    np.testing.assert_array_equal(to_np(kc.Monotonic(method="merge")(tensor(w))), w)


def test_a_strictly_decreasing_slice_becomes_its_mean():
    w = np.linspace(3.0, -1.0, 100)[:, None]
    got = to_np(kc.Monotonic(method="merge")(tensor(w)))
    np.testing.assert_allclose(got, np.full_like(w, 1.0), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "dtype",
    [pytest.param("float16", marks=pytest.mark.long_on("jax")), "bfloat16", "float32", "float64"],
)
def test_merge_in_every_dtype_on_a_long_slice(dtype):
    w = sample((200, 2), "normal", seed=36) + np.linspace(-3, 3, 200)[:, None]
    with float64_enabled():
        x = tensor(w, dtype)
        out = kc.Monotonic()(x)  # "auto": the merge at 200 entries
        assert dtype_of(out) == dtype
        got = to_np(out)
    want = monotonic_ref(0)(to_np(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol(dtype, 4.0, 256))


@pytest.mark.parametrize("n", [pytest.param(4096, marks=pytest.mark.long_on("jax"))])
def test_long_slices_match_pava_and_sklearn(n):
    w = sample((n, 2), "normal", seed=37) + np.linspace(-4, 4, n)[:, None]
    got = to_np(kc.Monotonic()(tensor(w)))
    want = monotonic_ref(0)(w)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    np.testing.assert_allclose(got, sklearn_isotonic(w), rtol=0, atol=2e-5)
    assert np.all(np.diff(got, axis=0) >= 0)


@pytest.mark.long_on("jax")
def test_auto_takes_the_merge_above_the_pairwise_length():
    w = tensor(sample((_kernels.PAIRWISE_MAX_LENGTH + 1, 3), "normal", seed=38))
    auto, merge = kc.Monotonic()(w), kc.Monotonic(method="merge")(w)
    np.testing.assert_array_equal(to_np(auto), to_np(merge))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_chunked_path_matches_pava(monkeypatch, compiled):
    # 2 slices of 8 points per chunk: 5 slices run in 3 chunks, the last padded.
    monkeypatch.setattr(_kernels, "PAIRS_PER_CHUNK", 2 * 8 * 8)
    w = sample((7, 5), "normal", seed=33)
    c = kc.Monotonic()
    fn = jit(lambda x: c(x)) if compiled else c
    got = to_np(fn(tensor(w)))
    np.testing.assert_allclose(got, monotonic_ref(0)(w), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"axis": [0, 1]}, "Monotonic.*axis.*one int"),
        ({"axis": None}, "Monotonic.*axis.*one int"),
        ({"axis": 0.5}, "Monotonic.*axis"),
        ({"increasing": "yes"}, "Monotonic.*increasing.*yes"),
        ({"method": "pava"}, "Monotonic.*method.*pava"),
    ],
)
def test_monotonic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kc.Monotonic(**kwargs)


def test_monotonic_axis_out_of_range_names_the_shape():
    with pytest.raises(ValueError, match=r"Monotonic.*out of range.*\(4, 3\)"):
        kc.Monotonic(axis=2)(tensor(np.ones((4, 3))))
