"""order.py: Monotonic (isotonic regression along an axis)."""

import numpy as np
import pytest

import kconstraints as kc
import kconstraints.order
from tests.backend import jit
from tests.helpers import sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import monotonic_ref


class TestMonotonicProperties(PropertySuite):
    cases = [
        Case(kc.Monotonic(), (8, 4), monotonic_ref(0)),
        Case(kc.Monotonic(axis=-1, increasing=False), (5, 9), monotonic_ref(-1, False)),
        Case(kc.Monotonic(axis=1), (3, 5, 2, 2), monotonic_ref(1)),
        Case(kc.Monotonic(axis=0), (12,), monotonic_ref(0)),
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


def test_slices_of_1024_entries_match_pava():
    w = sample((1024, 3), "normal", seed=32) + np.linspace(-3, 3, 1024)[:, None]
    got = to_np(kc.Monotonic()(tensor(w)))
    np.testing.assert_allclose(got, monotonic_ref(0)(w), rtol=0, atol=2e-5)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "jit"])
def test_chunked_path_matches_pava(monkeypatch, compiled):
    # 2 slices of 8 points per chunk: 5 slices run in 3 chunks, the last padded.
    monkeypatch.setattr(kconstraints.order, "PAIRS_PER_CHUNK", 2 * 8 * 8)
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
    ],
)
def test_monotonic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kc.Monotonic(**kwargs)


def test_monotonic_axis_out_of_range_names_the_shape():
    with pytest.raises(ValueError, match=r"Monotonic.*out of range.*\(4, 3\)"):
        kc.Monotonic(axis=2)(tensor(np.ones((4, 3))))
