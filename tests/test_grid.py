"""The convolution frequency grid of `kconstraints/_grid.py`: the factor it promises, and every tap kept."""

import math

import pytest

from kconstraints._grid import conv_grid


@pytest.mark.parametrize("kernel_size", [(3,), (3, 3), (5, 1), (1, 7), (3, 3, 3), (2, 5)])
@pytest.mark.parametrize("tolerance", [0.5, 0.02, 1e-3])
def test_the_grid_bridges_within_the_tolerance_and_keeps_every_tap(kernel_size, tolerance):
    sizes, factor = conv_grid(kernel_size, tolerance)
    assert len(sizes) == len(kernel_size)
    assert 1 <= factor <= 1 + tolerance * (1 + 1e-12)
    # The factor is 1 / (1 - s^2 / 2) for s = (pi / 2) sum_i (k_i - 1) / N_i.
    s = sum(math.pi * (k - 1) / (2 * n) for k, n in zip(kernel_size, sizes, strict=True))
    assert factor == pytest.approx(1 / (1 - s * s / 2), rel=1e-12)
    for k, n in zip(kernel_size, sizes, strict=True):
        assert n == 1 if k == 1 else n >= k  # an FFT of size n keeps every tap


def test_a_tighter_tolerance_takes_more_frequencies():
    coarse, _ = conv_grid((3, 3), 0.1)
    fine, _ = conv_grid((3, 3), 0.01)
    assert all(f > c for f, c in zip(fine, coarse, strict=True))


def test_a_kernel_of_one_tap_needs_no_grid():
    assert conv_grid((1, 1), 0.02) == ([1, 1], 1.0)
