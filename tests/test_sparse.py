"""sparse.py: TopK and NM against a stable-sort NumPy reference."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import graph_breaks, jit
from tests.helpers import param_id, sample, tensor, to_np
from tests.properties import Case, PropertySuite
from tests.references import n_m_ref, top_k_ref


class TestSparseProperties(PropertySuite):
    # Four cases: each costs a torch.compile in test_jit_matches_eager. More
    # layouts are checked eagerly below.
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
    ]
    # One compiled function for the three: torch.compile costs seconds each.
    compiled = jit(lambda x: [c(x) for c, _ in cases])
    with graph_breaks() as breaks:
        got = compiled(tensor(w))
    assert breaks[0] == 0
    for out, (_, reference) in zip(got, cases, strict=True):
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
