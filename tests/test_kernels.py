"""The shared projection kernels of `kconstraints/_kernels.py`, called directly on every backend.

The constraints built on them (`Simplex`, `L1Ball`, `DoublyStochastic`,
`Monotonic`, `TopK`, `NM`) are tested through the property suite in their
own test modules; here each kernel is held to a float64 NumPy reference on
rows the constraints would hand it.
"""

import numpy as np
import pytest

from kconstraints import _kernels
from tests.backend import float64_enabled
from tests.helpers import tensor, to_np
from tests.references import pava


def numpy_threshold(rows, total):
    """`theta` with `sum(max(row - theta, 0)) = total` per row, by a float64 sort."""
    u = -np.sort(-rows, axis=-1)
    counts = np.arange(1, rows.shape[-1] + 1)
    return np.max((np.cumsum(u, axis=-1) - total) / counts, axis=-1, keepdims=True)


ROWS = {
    "normal": np.random.default_rng(0).normal(size=(5, 40)),
    "ties": np.round(np.random.default_rng(1).normal(size=(5, 40))),
    # Entries on many scales.
    "geometric": np.tile(2.0 ** -np.arange(40.0), (5, 1)),
}


@pytest.mark.parametrize("kind", ROWS)
@pytest.mark.parametrize("kernel", ["simplex_threshold", "sorted_threshold", "threshold"], ids=str)
def test_thresholds_match_a_float64_sort(kernel, kind):
    rows = ROWS[kind]
    with float64_enabled():
        got = to_np(getattr(_kernels, kernel)(tensor(rows, "float64"), 1.0))
    np.testing.assert_allclose(got, numpy_threshold(rows, 1.0), rtol=0, atol=1e-12)


def test_michelot_passes_climb_to_the_threshold_from_below():
    rows = ROWS["normal"]
    theta = numpy_threshold(rows, 1.0)
    with float64_enabled():
        one, first = _kernels.michelot_threshold(tensor(rows, "float64"), 1.0, passes=1)
        done, settled = _kernels.michelot_threshold(tensor(rows, "float64"), 1.0)
        one, first, done, settled = map(to_np, (one, first, done, settled))
    assert (one <= theta + 1e-12).all()  # every pass is a lower bound
    assert not first.all()  # one pass does not settle these rows
    assert settled.all()
    np.testing.assert_allclose(done, theta, rtol=0, atol=1e-12)


def test_bounded_threshold_gives_the_total_inside_the_bounds():
    rows = ROWS["normal"]
    with float64_enabled():
        tau = to_np(_kernels.bounded_threshold(tensor(rows, "float64"), 1.0, -0.1, 0.3))
    sums = np.clip(rows - tau, -0.1, 0.3).sum(axis=-1)
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["pairwise", "merge"])
def test_isotonic_rows_match_pool_adjacent_violators(method):
    rows = ROWS["ties"]
    fit = _kernels.isotonic_rows_pairwise if method == "pairwise" else _kernels.isotonic_rows_merged
    with float64_enabled():
        got = to_np(fit(tensor(rows, "float64")))
    want = np.stack([pava(row) for row in rows])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_keep_largest_keeps_k_per_row_and_the_lower_index_on_ties():
    rows = np.array([[1.0, -3.0, 3.0, 0.5, -3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    got = to_np(_kernels.keep_largest_in_rows(tensor(rows), 2))
    np.testing.assert_array_equal(got, [[0, -3.0, 3.0, 0, 0], [2.0, 2.0, 0, 0, 0]])
    for k in (1, 3, 4):  # both sides of the top_k choice
        mask = to_np(_kernels.keep_largest(tensor(np.abs(rows)), k))
        assert (mask.sum(axis=-1) == k).all(), k
    np.testing.assert_array_equal(to_np(_kernels.keep_largest_in_rows(tensor(rows), 0)), 0 * rows)
    np.testing.assert_array_equal(to_np(_kernels.keep_largest_in_rows(tensor(rows), 5)), rows)
