"""order.py: Monotonic (isotonic regression) and Unimodal (unimodal regression) along an axis."""

import numpy as np
import pytest

import kconstraints as kc
from kconstraints import _kernels
from kconstraints.testing import KINDS as INPUT_KINDS
from tests.backend import float64_enabled, jit
from tests.helpers import dtype_of, sample, tensor, to_np, tol
from tests.properties import Case, PropertySuite
from tests.references import monotonic_ref, unimodal_ref, unimodal_vector


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


# ------------------------------------------------------------------ Unimodal


def unimodal(axis, peak=True):
    """The property case's reference and feasibility: a float64 fit, and a slice its own fit."""
    ref = unimodal_ref(axis, peak)

    def feasible(p, tol):
        return np.max(np.abs(ref(p) - p), initial=0.0) <= tol * max(1.0, np.max(np.abs(p)))

    return ref, feasible


def unimodal_case(constraint, shape, long_on=()):
    ref, feasible = unimodal(constraint.axis, constraint.peak)
    return Case(
        constraint, shape, ref, feasible=feasible, kinds=KINDS_WITHOUT_TIES, long_on=long_on
    )


# Every shape compiles its own O(n^2) graph (about 3 s on JAX, a minute
# under torch.compile, 2-core CPU): the default run keeps two cases, a peak
# and a valley, and `nox -s long` runs the rest.
EVERY_BACKEND = ("jax", "tensorflow", "torch")


# Not the "ties" kind: several splits tie on half-integer entries, rounding
# picks any of them and the nearest points differ by O(w);
# `test_unimodal_on_ties_is_a_nearest_point` compares the objective there.
KINDS_WITHOUT_TIES = tuple(k for k in INPUT_KINDS if k != "ties")


class TestUnimodalProperties(PropertySuite):
    cases = [
        unimodal_case(kc.Unimodal(), (8, 4)),
        unimodal_case(kc.Unimodal(axis=-1, peak=False), (3, 17)),
        unimodal_case(kc.Unimodal(axis=0), (1, 3), long_on=EVERY_BACKEND),
        unimodal_case(kc.Unimodal(axis=-1), (4, 2), long_on=EVERY_BACKEND),
        unimodal_case(kc.Unimodal(axis=0, peak=False), (5, 3), long_on=EVERY_BACKEND),
        unimodal_case(kc.Unimodal(axis=0), (64, 2), long_on=EVERY_BACKEND),
        # A Conv2D kernel (rows, cols, in_channels, filters): each filter's columns.
        unimodal_case(kc.Unimodal(axis=0), (5, 3, 2, 4), long_on=("torch",)),
    ]


@pytest.mark.parametrize(
    "w, peak, want",
    [
        ([1.0, 3.0, 2.0, 4.0, 0.0], True, [1.0, 2.5, 2.5, 4.0, 0.0]),
        ([1.0, 3.0, 2.0, 4.0, 0.0], False, [2.5, 2.5, 2.5, 2.5, 0.0]),
        ([3.0, 1.0, 2.0], True, [3.0, 1.5, 1.5]),
        ([3.0, 1.0, 2.0], False, [3.0, 1.0, 2.0]),
        ([2.0, 2.0, 2.0, 2.0], True, [2.0, 2.0, 2.0, 2.0]),
        ([2.0, 2.0, 2.0, 2.0], False, [2.0, 2.0, 2.0, 2.0]),
        ([0.0, 4.0, 0.0, 4.0, 0.0], True, [0.0, 4.0, 2.0, 2.0, 0.0]),
        ([5.0, -1.0], True, [5.0, -1.0]),
        ([-7.0], False, [-7.0]),
        # Ties: both ends of the dip give error 0.5; the first split wins.
        ([1.0, 0.0, 1.0], True, [1.0, 0.5, 0.5]),
        ([0.0, 1.0, 0.0], False, [0.0, 0.5, 0.5]),
        ([0.0, 0.0, 0.0], True, [0.0, 0.0, 0.0]),
    ],
)
def test_unimodal_exact_answers(w, peak, want):
    got = to_np(kc.Unimodal(peak=peak)(tensor(w)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    np.testing.assert_allclose(unimodal_vector(np.array(w), peak), want, rtol=0, atol=1e-15)


def unimodal_slices(n, cols, kind, seed, peak=True):
    """(n, cols) float64 slices already unimodal: a sorted rise, then a sorted fall."""
    w = sample((n, cols), kind, seed=seed)
    top = np.random.default_rng(seed).integers(0, n, size=cols)
    out = np.empty_like(w)
    for j in range(cols):
        rise, fall = np.sort(w[: top[j], j]), np.sort(w[top[j] :, j])[::-1]
        out[:, j] = np.concatenate([rise, fall]) if peak else -np.concatenate([rise, fall])
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("peak", [True, False])
def test_unimodal_and_ordered_slices_come_back_bit_for_bit(kind, peak, dtype):
    rising = np.sort(sample((40, 3), kind, seed=41), axis=0)
    slices = [unimodal_slices(40, 5, kind, 42, peak), rising, rising[::-1], rising * 1e6]
    w = np.concatenate(slices, axis=1)  # one call: each compile takes seconds
    with float64_enabled():
        x = tensor(w, dtype)
        np.testing.assert_array_equal(to_np(kc.Unimodal(peak=peak)(x)), to_np(x))


def objective(w, p, axis=0):
    return np.sum((p - w) ** 2, axis=axis)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("peak", [True, False])
def test_unimodal_on_ties_is_a_nearest_point(peak, dtype):
    """Half-integer entries: several splits tie, so the objective is compared, not the argmin."""
    w = sample((30, 64), "ties", seed=43)
    with float64_enabled():
        got = to_np(kc.Unimodal(peak=peak)(tensor(w, dtype)))
    ref = unimodal_ref(0, peak)
    want = ref(w)
    # float32: each error is summed to about 30 * eps of the slice's squares.
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(objective(w, got), objective(w, want), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ref(got), got, rtol=0, atol=rtol)  # unimodal


@pytest.mark.parametrize(
    "n, axis, peak",
    [(1, 0, True), (2, -1, False), (5, 0, False), (17, -1, True), (64, 0, True), (130, -1, False)],
)
def test_unimodal_matches_the_brute_force_in_float64(n, axis, peak):
    w = sample((n, 6) if axis == 0 else (6, n), "normal", seed=44 + n)
    w = w + np.sin(np.arange(n) / 3.0).reshape((n, 1) if axis == 0 else (1, n))
    with float64_enabled():
        got = to_np(kc.Unimodal(axis=axis, peak=peak)(tensor(w, "float64")))
    np.testing.assert_allclose(got, unimodal_ref(axis, peak)(w), rtol=0, atol=1e-12)


def test_an_offset_does_not_swamp_the_errors():
    # 1e4 + noise in float32: the errors come from the entries less their mean.
    w = 1e4 + sample((40, 8), "normal", seed=45)
    x = tensor(w)
    got = to_np(kc.Unimodal()(x))
    want = unimodal_ref(0)(to_np(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * 2**-23 * 1e4)


def test_unimodal_reaches_the_cvxpy_optimum_over_every_split():
    """An independent reference: per split, two QPs (rising, then falling) solved by cvxpy."""
    cp = pytest.importorskip("cvxpy", reason="cvxpy is the QP reference (dependency group test)")
    w = sample((9, 4), "normal", seed=46)
    with float64_enabled():
        got = to_np(kc.Unimodal()(tensor(w, "float64")))
    for j in range(w.shape[1]):
        best = np.inf
        for m in range(w.shape[0]):
            z = cp.Variable(w.shape[0])
            order = [z[1 : m + 1] >= z[:m]] if m else []
            if m + 1 < w.shape[0]:
                order.append(z[m + 1 :][1:] <= z[m + 1 :][:-1])
            problem = cp.Problem(cp.Minimize(cp.sum_squares(z - w[:, j])), order)
            best = min(best, problem.solve())
        np.testing.assert_allclose(objective(w[:, j], got[:, j]), best, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "compiled",
    [False, pytest.param(True, marks=pytest.mark.long_on("torch"))],
    ids=["eager", "jit"],
)
def test_unimodal_chunked_path_matches_the_brute_force(monkeypatch, compiled):
    # 2 slices of 8 entries (9 * 9 chords) per chunk: 5 slices run in 3 chunks, the last padded.
    monkeypatch.setattr(_kernels, "PAIRS_PER_CHUNK", 2 * 9 * 9)
    w = sample((8, 5), "normal", seed=47)
    c = kc.Unimodal(peak=False)
    fn = jit(lambda x: c(x)) if compiled else c
    got = to_np(fn(tensor(w)))
    np.testing.assert_allclose(got, unimodal_ref(0, False)(w), rtol=0, atol=1e-6)


def test_a_non_finite_slice_leaves_the_others_alone():
    w = sample((6, 3), "normal", seed=48)
    w[2, 1] = np.nan
    got = to_np(kc.Unimodal()(tensor(w)))
    keep = [0, 2]
    np.testing.assert_allclose(got[:, keep], unimodal_ref(0)(w[:, keep]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"axis": [0, 1]}, "Unimodal.*axis.*one int"),
        ({"axis": None}, "Unimodal.*axis.*one int"),
        ({"axis": 0.5}, "Unimodal.*axis.*0.5"),
        ({"peak": "yes"}, "Unimodal.*peak.*yes"),
        ({"peak": 1}, "Unimodal.*peak.*1"),
    ],
)
def test_unimodal_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kc.Unimodal(**kwargs)


def test_unimodal_axis_out_of_range_names_the_shape():
    with pytest.raises(ValueError, match=r"Unimodal.*out of range.*\(4, 3\)"):
        kc.Unimodal(axis=-3)(tensor(np.ones((4, 3))))
