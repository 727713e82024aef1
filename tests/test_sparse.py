"""sparse.py: TopK and NM against a stable-sort NumPy reference; SparseSimplex against the
k-largest construction, and that against a brute force over every support."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import float64_enabled, graph_breaks, jit
from tests.helpers import param_id, sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import (
    n_m_ref,
    simplex_ref,
    sparse_simplex_distance,
    sparse_simplex_ref,
    sparse_simplex_vector,
    top_k_ref,
)


def in_sparse_simplex(c):
    """`feasible(p, tol)` for a SparseSimplex: every slice >= 0, summing to `total`, <= k nonzeros."""

    def feasible(p, tol):
        axes = None if c.axis is None else tuple(np.atleast_1d(c.axis) % p.ndim)
        n = p.size if axes is None else int(np.prod([p.shape[a] for a in axes]))
        sums = np.sum(p, axis=axes)
        ok = np.all(np.abs(sums - c.total) <= n * tol * max(1.0, c.total))
        return ok and np.all(p >= 0) and np.all(np.count_nonzero(p, axis=axes) <= c.k)

    return feasible


SPARSE_SIMPLEX = [
    (kc.SparseSimplex(2), (6, 4), sparse_simplex_ref(2, 1.0, 0)),
    (kc.SparseSimplex(5, 2.0, axis=[0, 1, 2]), (3, 3, 2, 4), sparse_simplex_ref(5, 2.0, (0, 1, 2))),
    (kc.SparseSimplex(1, 0.5, axis=-1), (5, 7), sparse_simplex_ref(1, 0.5, -1)),
    # k = n: the plain simplex.
    (kc.SparseSimplex(4, axis=None), (2, 2), simplex_ref(1.0, None)),
]


class TestSparseProperties(PropertySuite):
    # Few cases: each costs a torch.compile in test_compiled_matches_eager.
    # More layouts are checked eagerly below.
    cases = [
        Case(kc.TopK(k=3), (6, 4), top_k_ref(k=3), convex=False),
        Case(
            kc.TopK(density=0.25, axis=[0, 1, 2]),
            (3, 3, 2, 4),
            top_k_ref(density=0.25, axis=(0, 1, 2)),
            convex=False,
        ),
        Case(kc.NM(2, 4), (8, 5), n_m_ref(2, 4, 0), convex=False),
        Case(kc.NM(1, 4, axis=2), (3, 3, 8, 4), n_m_ref(1, 4, 2), convex=False),
    ]
    cases += [Case(c, s, r, feasible=in_sparse_simplex(c)) for c, s, r in SPARSE_SIMPLEX]


@pytest.mark.parametrize("kind", ["normal", "ties", "large"])
@pytest.mark.parametrize(
    "constraint, shape, reference",
    [
        (kc.TopK(k=3, axis=0), (6, 4), top_k_ref(k=3, axis=0)),
        (kc.TopK(k=5, axis=0), (6, 4), top_k_ref(k=5, axis=0)),  # k > n / 2
        (kc.TopK(k=2, axis=-1), (5, 7), top_k_ref(k=2, axis=-1)),
        (kc.TopK(density=0.7, axis=[1, 2]), (2, 3, 5), top_k_ref(density=0.7, axis=(1, 2))),
        (kc.NM(2, 4, axis=-1), (3, 8), n_m_ref(2, 4, -1)),
        (kc.NM(3, 8, axis=1), (2, 16, 3), n_m_ref(3, 8, 1)),
    ],
    ids=param_id,
)
def test_more_layouts_match_the_reference(constraint, shape, reference, kind):
    w = sample(shape, kind, seed=40)
    np.testing.assert_array_equal(to_np(constraint(tensor(w))), reference(w.astype("float32")))


@pytest.mark.parametrize(
    "constraint, w, want",
    [
        # Ties at the k-th magnitude: the lower index wins, whatever the sign.
        (kc.TopK(k=2), [3.0, -1.0, 1.0, -1.0], [3.0, -1.0, 0.0, 0.0]),
        (kc.TopK(k=3), [-1.0, 1.0, 1.0, -1.0, 1.0], [-1.0, 1.0, 1.0, 0.0, 0.0]),
        (kc.TopK(k=1), [0.0, -0.0, 0.0], [0.0, 0.0, 0.0]),
        (kc.TopK(k=2), [0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 5.0, 0.0]),
        # Ties on the large side of the `top_k` of the smallest (k > n / 2).
        (kc.TopK(k=4), [2.0, 2.0, 2.0, 2.0, 2.0, 1.0], [2.0, 2.0, 2.0, 2.0, 0.0, 0.0]),
        (kc.TopK(k=0), [1.0, -2.0], [0.0, 0.0]),
        (kc.TopK(k=3), [1.0, -2.0, 0.5], [1.0, -2.0, 0.5]),
        # Row-wise along axis 1, an all-zero row stays zero.
        (kc.TopK(k=1, axis=1), [[0.0, 0.0], [1.0, -1.0]], [[0.0, 0.0], [1.0, 0.0]]),
        (kc.TopK(density=0.5, axis=1), [[0.0, 4.0, 4.0, 1.0]], [[0.0, 4.0, 4.0, 0.0]]),
        (
            kc.NM(2, 4, axis=-1),
            [[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]],
            [[1.0, 1.0, 0, 0, 0, 0, 0, 0]],
        ),
        (kc.NM(1, 2, axis=-1), [[-3.0, 3.0, 0.5, -0.25]], [[-3.0, 0.0, 0.5, 0.0]]),
        (kc.NM(4, 4, axis=-1), [[1.0, -2.0, 3.0, 0.0]], [[1.0, -2.0, 3.0, 0.0]]),
    ],
)
def test_sparse_exact_answers(constraint, w, want):
    np.testing.assert_array_equal(to_np(constraint(tensor(w))), want)


def test_ties_compiled_follow_the_lower_index_rule():
    # Five distinct values and many zeros: every slice ties at its k-th magnitude.
    w = sample((24, 3), "ties", seed=41)
    cases = [
        (kc.TopK(k=13, axis=0), top_k_ref(k=13, axis=0)),  # the k smallest side
        (kc.TopK(k=40), top_k_ref(k=40)),
        (kc.NM(2, 4), n_m_ref(2, 4, 0)),
        (kc.SparseSimplex(3, axis=0), sparse_simplex_ref(3, 1.0, 0)),
        (kc.SparseSimplex(20, 2.0, axis=0), sparse_simplex_ref(20, 2.0, 0)),
    ]
    # One compiled function for them all: torch.compile costs seconds each.
    compiled = jit(lambda x: [c(x) for c, _ in cases])
    with graph_breaks() as breaks:
        got = compiled(tensor(w))
    assert breaks[0] == 0
    for out, (c, reference) in zip(got, cases, strict=True):
        if isinstance(c, kc.SparseSimplex):  # the same support; the values to rounding
            np.testing.assert_allclose(to_np(out), reference(w), rtol=0, atol=1e-6)
            assert np.array_equal(to_np(out) != 0, reference(w) != 0)
        else:
            np.testing.assert_array_equal(to_np(out), reference(w))


@pytest.mark.parametrize(
    "n, density, want",
    [
        (10, 0.3, 3),
        (10, 0.25, 3),
        (10, 0.24, 2),
        (8, 0.0625, 1),
        (8, 0.01, 1),
        (8, 1.0, 8),
        (7, 0.5, 4),
    ],
)
def test_density_keeps_the_nearest_count_halves_up_at_least_one(n, density, want):
    assert kc.TopK(density=density).count((n,)) == want
    got = to_np(kc.TopK(density=density)(tensor(np.arange(1.0, n + 1))))
    assert np.count_nonzero(got) == want


def test_sparse_keeps_the_weight_bit_for_bit_where_it_keeps_it():
    w = sample((16, 8), "normal", seed=42).astype("float32")
    for c in (kc.TopK(k=5, axis=0), kc.NM(2, 4)):
        got = to_np(c(tensor(w)))
        kept = got != 0
        np.testing.assert_array_equal(got[kept], w[kept])


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: kc.TopK(),
            r"TopK: pass exactly one of `k` and `density`, got k=None, density=None",
        ),
        (lambda: kc.TopK(k=2, density=0.5), r"TopK: pass exactly one.*k=2, density=0.5"),
        (lambda: kc.TopK(k=-1), r"TopK: `k` must be an int >= 0, got -1"),
        (lambda: kc.TopK(k=2.0), r"TopK: `k` must be an int"),
        (lambda: kc.TopK(k=True), r"TopK: `k` must be an int"),
        (lambda: kc.TopK(density=0.0), r"TopK: `density` must be finite and in \(0, 1\]"),
        (lambda: kc.TopK(density=1.5), r"TopK: `density`.*1.5"),
        (lambda: kc.TopK(k=1, axis=0.5), r"TopK: `axis`"),
        (lambda: kc.NM(3, 2), r"NM: `n` must be <= `m`, got n=3, m=2"),
        (lambda: kc.NM(0, 4), r"NM: `n` must be an int >= 1, got 0"),
        (lambda: kc.NM(2, 0), r"NM: `n` must be <= `m`|NM: `m` must be an int >= 1"),
        (lambda: kc.NM(axis=[0]), r"NM: `axis` must be one int"),
        (lambda: kc.NM(axis=None), r"NM: `axis` must be one int"),
    ],
)
def test_sparse_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_k_larger_than_a_slice_names_both_numbers():
    with pytest.raises(
        ValueError, match=r"TopK: `k`=7 is larger than a slice, which has 6 entries"
    ):
        kc.TopK(k=7, axis=0)(tensor(np.ones((6, 3))))
    assert to_np(kc.TopK(k=7)(tensor(np.ones((6, 3))))).sum() == 7  # 18 entries: fine


def test_axis_length_not_a_multiple_of_m_names_both_numbers():
    with pytest.raises(
        ValueError, match=r"NM: the weight's length along `axis`=0 is 6, not a multiple of `m`=4"
    ):
        kc.NM(2, 4)(tensor(np.ones((6, 8))))
    with pytest.raises(ValueError, match=r"NM: `axis`=2 is out of range.*\(6, 8\)"):
        kc.NM(2, 4, axis=2)(tensor(np.ones((6, 8))))


def test_penalty_is_the_squared_distance_to_the_sparse_set():
    w = sample((8, 4), "normal", seed=43)
    for c, ref in ((kc.TopK(k=3, axis=0), top_k_ref(k=3, axis=0)), (kc.NM(2, 4), n_m_ref(2, 4, 0))):
        got = float(to_np(kc.Penalty(c, strength=0.5)(tensor(w))))
        want = 0.5 * np.sum((w - ref(w)) ** 2)
        assert got == pytest.approx(want, rel=1e-5)


def test_saved_model_keeps_the_sparse_constraints_in_safe_mode(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4, kernel_constraint=kc.NM(2, 4)),
            keras.layers.Dense(2, kernel_constraint=kc.TopK(density=0.5, axis=0)),
        ]
    )
    path = tmp_path / "sparse.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(b.kernel_constraint) is type(a.kernel_constraint)
        assert b.kernel_constraint.get_config() == a.kernel_constraint.get_config()


# ------------------------------------------------------------ the sparse simplex


@pytest.mark.parametrize("kind", ["normal", "ties", "large"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sparse_simplex_is_nearest_over_every_support(kind, dtype):
    """Kyrillidis et al.'s theorem, checked: no support of at most k entries comes nearer.

    Brute force over all supports of 1 to k of 7 entries, each projected onto
    the simplex in float64; with ties, several supports are nearest and
    only the distance is compared.
    """
    w = sample((7, 6), kind, seed=50) / (1e6 if kind == "large" else 1)
    with float64_enabled():
        for k in range(1, 8):
            for total in (1.0, 3.0):
                got = to_np(kc.SparseSimplex(k, total, axis=0)(tensor(w, dtype)))
                x = to_np(tensor(w, dtype))  # the weight as the dtype holds it
                rel = 1e-12 if dtype == "float64" else 1e-5
                for j in range(w.shape[1]):
                    best = sparse_simplex_distance(x[:, j], k, total)
                    assert np.sum((x[:, j] - got[:, j]) ** 2) <= best + rel * max(1.0, best)
                    assert np.count_nonzero(got[:, j]) <= k and np.all(got[:, j] >= 0)
                    np.testing.assert_allclose(got[:, j].sum(), total, rtol=rel)
                    want = sparse_simplex_vector(x[:, j], k, total)
                    np.testing.assert_allclose(got[:, j], want, rtol=0, atol=rel * total)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "constraint, w, want",
    [
        (kc.SparseSimplex(2, axis=-1), [[0.9, 0.6, -2.0, 0.5]], [[0.65, 0.35, 0.0, 0.0]]),
        # By value, not magnitude: the large negative entries are never kept.
        (kc.SparseSimplex(1, axis=-1), [[-3.0, -1.0, -2.0]], [[0.0, 1.0, 0.0]]),
        (kc.SparseSimplex(2, axis=-1), [[0.2, -5.0, 0.1, 0.3]], [[0.45, 0.0, 0.0, 0.55]]),
        # Ties at the k-th value: the lower index wins; a zero slice keeps its first k.
        (kc.SparseSimplex(2, axis=-1), [[1.0, 1.0, 1.0, 0.0]], [[0.5, 0.5, 0.0, 0.0]]),
        (kc.SparseSimplex(2, axis=-1), [[0.0, -0.0, 0.0, 0.0]], [[0.5, 0.5, 0.0, 0.0]]),
        (kc.SparseSimplex(2, axis=-1), [[0.0, 3.0, 3.0, 3.0]], [[0.0, 0.5, 0.5, 0.0]]),
        # Fewer than k nonzeros: the simplex step zeroes kept entries far below the top.
        (kc.SparseSimplex(3, axis=-1), [[2.0, 0.0, -1.0, 0.5]], [[1.0, 0.0, 0.0, 0.0]]),
        (kc.SparseSimplex(2, 0.0, axis=-1), [[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]),
        # k = n is the simplex; a slice of one entry is `total`.
        (kc.SparseSimplex(3, axis=-1), [[0.5, 0.5, -2.0]], [[0.5, 0.5, 0.0]]),
        (kc.SparseSimplex(1, 2.0, axis=0), [[-5.0, 3.0]], [[2.0, 2.0]]),
        # Magnitudes of 1e6, exactly representable in float32: the answer is exact.
        (kc.SparseSimplex(2, axis=-1), [[1e6, 0.0, 1e6 - 0.5, 5.0]], [[0.75, 0.0, 0.25, 0.0]]),
        (
            kc.SparseSimplex(2, axis=1),
            [[[0.1, 0.4], [0.3, 0.2], [0.6, -0.1]]],
            [[[0.0, 0.6], [0.35, 0.4], [0.65, 0.0]]],
        ),
    ],
)
def test_sparse_simplex_exact_answers(constraint, w, want, dtype):
    with float64_enabled():
        got = to_np(constraint(tensor(w, dtype)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7 if dtype == "float32" else 1e-15)


def test_sparse_simplex_keeps_a_feasible_weight():
    w = sample((8, 5), "normal", seed=51)
    z = sparse_simplex_ref(3, 1.0, 0)(w)  # in the set, from float64
    np.testing.assert_allclose(to_np(kc.SparseSimplex(3)(tensor(z))), z, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kc.SparseSimplex(0), r"SparseSimplex: `k` must be an int >= 1, got 0"),
        (lambda: kc.SparseSimplex(-2), r"SparseSimplex: `k` must be an int >= 1, got -2"),
        (lambda: kc.SparseSimplex(2.0), r"SparseSimplex: `k` must be an int >= 1, got 2.0"),
        (lambda: kc.SparseSimplex(True), r"SparseSimplex: `k` must be an int >= 1, got True"),
        (lambda: kc.SparseSimplex(None), r"SparseSimplex: `k` must be an int >= 1, got None"),
        (
            lambda: kc.SparseSimplex(2, -1.0),
            r"SparseSimplex: `total` must be.*\[0, inf\], got -1.0",
        ),
        (lambda: kc.SparseSimplex(2, float("nan")), r"SparseSimplex: `total` must be finite"),
        (lambda: kc.SparseSimplex(2, "1"), r"SparseSimplex: `total` must be a real number"),
        (lambda: kc.SparseSimplex(2, axis=0.5), r"SparseSimplex: `axis` must be None"),
    ],
)
def test_sparse_simplex_bad_arguments_fail_in_init(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sparse_simplex_k_larger_than_a_slice_names_both_numbers():
    with pytest.raises(
        ValueError,
        match=r"SparseSimplex: `k`=7 is larger than a slice, which has 6 entries "
        r"\(axis=0, weight of shape \(6, 3\)\)",
    ):
        kc.SparseSimplex(7)(tensor(np.ones((6, 3))))
    got = to_np(kc.SparseSimplex(7, axis=None)(tensor(np.ones((6, 3)))))  # 18 entries: fine
    assert np.count_nonzero(got) == 7 and got.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"SparseSimplex: `axis`=2 is out of range.*\(6, 3\)"):
        kc.SparseSimplex(1, axis=2)(tensor(np.ones((6, 3))))
