"""Order constraints: each slice along `axis` is a sequence held in order.

For a Dense kernel of shape `(input_dim, units)`, `axis=0` orders the
incoming weights of each unit along the input index (inputs with a natural
order: lags, doses, ranks) and `axis=1` orders the weights of the units for
each input. For a Conv2D kernel `(rows, cols, in_channels, filters)`,
`axis=0` orders each column of every filter from top to bottom. For a bias of
shape `(units,)`, `axis=0` makes the biases increasing cut points (ordinal
regression).
"""

from __future__ import annotations

from kconstraints._base import Constraint
from kconstraints._checks import check_bool, check_choice, check_one_axis, resolve_axis
from kconstraints._kernels import isotonic_rows
from kconstraints._registry import register
from kconstraints._tensors import slices_as_rows, upcast

__all__ = ["Monotonic"]


@register(
    family="slice",
    convex=True,
    exact=True,
    summary=(
        "slice non-decreasing (or non-increasing) along `axis`: exact isotonic regression, "
        "O(n log^2 n) for long slices"
    ),
    examples=lambda shape: Monotonic(axis=0),
    uses="ordered weights along an axis (cut points, quantiles); for a network monotone in its inputs, see `L1Ball`",
)
class Monotonic(Constraint):
    """Ordered entries: the projection onto non-decreasing (or non-increasing) sequences.

    The set is `{w : w_1 <= w_2 <= ... <= w_n}` along `axis`, for every slice
    (`>=` when `increasing=False`): ordered weights (cut points, quantiles),
    not a model monotone in its inputs, which is `L1Ball(c, axis=1)` on every
    kernel plus a residual (docs/guides/monotone-network.md). `P(w)` is the
    isotonic regression of each slice: runs that break the order are pooled
    into their mean,
    `P(w)_i = max_{j <= i} min_{k >= i} mean(w_j, ..., w_k)`. It is computed
    exactly, as the slopes of the lower convex hull of the cumulative sums,
    with fixed shapes and no data-dependent loop, so it compiles under JAX
    jit, TF XLA and torch.compile. `method="pairwise"` forms every chord of a
    slice of n entries at once: O(n^2) time and memory (in chunks of at most
    2**23 pairs), O(log n) depth. `method="merge"` fits blocks of 1, 2, 4, ...
    entries, each from its two sorted halves: O(n log^2 n) time, O(n)
    memory, O(log^2 n) depth. `"auto"` takes the pairwise hull for slices of
    up to 64 entries and the merge above. Sums are taken in float32 for
    float16/bfloat16 weights. Costs: [benchmarks](../benchmarks.md).

    Args:
        axis: the one axis along which entries are ordered (see the module
            docstring): `0` orders each unit's incoming weights in a Dense
            kernel `(input_dim, units)`, `-1` orders across units; `0` orders
            the rows of each filter of a Conv2D kernel
            `(rows, cols, in_channels, filters)`.
        increasing: True for non-decreasing, False for non-increasing.
        method: `"auto"`, `"pairwise"` or `"merge"` (same result, up to rounding).

    Example:

    >>> import keras, kconstraints
    >>> w = keras.ops.convert_to_tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    >>> keras.ops.convert_to_numpy(kconstraints.Monotonic(axis=0)(w)).astype(float).round(3).tolist()
    [[2.0, 1.0], [2.0, 2.0], [2.0, 3.0]]
    >>> cuts = keras.ops.convert_to_tensor([0.0, 2.0, 1.0, 3.0])
    >>> keras.ops.convert_to_numpy(kconstraints.Monotonic()(cuts)).astype(float).round(3).tolist()
    [0.0, 1.5, 1.5, 3.0]
    """

    def __init__(self, axis=0, increasing=True, method="auto"):
        self.axis = check_one_axis(self._owner, "axis", axis)
        self.increasing = check_bool(self._owner, "increasing", increasing)
        self.method = check_choice(self._owner, "method", method, ("auto", "pairwise", "merge"))

    def project(self, w):
        sign = 1.0 if self.increasing else -1.0
        x = upcast(w) * sign
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        return restore(isotonic_rows(rows, self.method)) * sign
