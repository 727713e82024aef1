"""The frequency grid of a convolution's certified norm bound, and the factor that bridges it.

One definition for both computations of the bound: `lipschitz.conv_norm_bound`
(in `keras.ops`, the weight's dtype, inside a train step) and
`certify.lipschitz_bound` (float64 NumPy, read once). The derivation is in the
`lipschitz` module docstring.
"""

from __future__ import annotations

import math


def conv_grid(kernel_size, tolerance):
    """Frequencies per spatial axis, and the factor `1 / (1 - s^2 / 2)` that bridges the grid.

    With `N_i` frequencies on an axis of `k_i` taps, the symbol's top
    singular value at the nearest grid point is at least `S (1 - s^2 / 2)`,
    `s = (pi / 2) sum_i (k_i - 1) / N_i` (Bernstein's inequality), so
    `S <= max over the grid * factor`. The grid makes `factor <= 1 +
    tolerance`, each axis with more than one tap taking an equal share of
    `s`; an axis of one tap gets one frequency, and a kernel without such an
    axis gets `[1, ...]` and the factor 1. Every `N_i >= k_i` (since
    `s_max < sqrt(2) < pi / 2`), so an FFT of size `N_i` keeps every tap.
    """
    # Plain loops, no generators or zip(strict=...): torch.compile traces this.
    active = 0
    for k in kernel_size:
        active += k > 1
    if not active:
        return [1] * len(kernel_size), 1.0
    # 1 / (1 - s^2 / 2) <= 1 + tolerance exactly when s <= s_max.
    s_max = math.sqrt(2 * (1 - 1 / (1 + tolerance)))
    sizes, s = [], 0.0
    for k in kernel_size:
        sizes.append(1 if k == 1 else math.ceil(math.pi * active * (k - 1) / (2 * s_max)))
        s += math.pi * (k - 1) / (2 * sizes[-1])
    return sizes, 1 / (1 - s * s / 2)
