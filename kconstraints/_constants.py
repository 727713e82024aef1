"""Every rounding constant of the package, one name per meaning.

A tolerance that absorbs float rounding is written here once, named for what
it covers, with where it is used; the code that uses it says why there.
"""

from __future__ import annotations

#: Unit roundoff `u` of each compute dtype: the largest relative error of one
#: rounding to nearest (half the gap from 1 to the next float). `L1Ball`
#: allows a slice's norm above the radius by the rounding of its sum.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}

#: The fraction of `high - low` by which the breakpoints next to a bounded
#: simplex shift's pivot may be rounded before `_kernels.bounded_shift` solves
#: again around the pivot: the error one solve leaves in the free entries.
PIVOT_ROUNDING = 2.0**-10

#: Machine epsilon of each compute dtype: the gap from 1 to the next float
#: (`2 u`). The margin of `SpectralNorm`'s estimated norm is a multiple of it.
MACHINE_EPSILON = {"float32": 2.0**-23, "float64": 2.0**-52}

#: The relative margin, per term of the longest sum, that makes a bound
#: computed in float32 an upper bound despite rounding: `2 u` of float32, so
#: `1 + n * SUM_MARGIN_PER_TERM` covers the error of a sum of `n` terms,
#: `n u / (1 - n u)` (Higham 2002, "Accuracy and Stability of Numerical
#: Algorithms", 3.1). Float64 kernels get the same, larger than they need.
#: Used by `lipschitz.conv_norm_bound` and `dense_norm_bound`.
SUM_MARGIN_PER_TERM = MACHINE_EPSILON["float32"]

#: The relative margin on a norm or singular value computed by float64 NumPy
#: (LAPACK's SVD): far above its rounding error (a few ulps times the
#: matrix size), so `certify.lipschitz_bound` stays an upper bound.
FLOAT64_NORM_MARGIN = 1e-9

#: The relative slack of a float64 consistency test of `A x0 = b` (the
#: least-squares residual of `AffineSet`'s rank-deficient system, which then
#: has a solution).
FLOAT64_RESIDUAL_SLACK = 1e-9

#: The slack of a float64 product `density * n` before it is rounded to a
#: count (`0.145 * 100 = 14.499999999999998`, a half): `TopK(density=...)`.
FLOAT64_PRODUCT_SLACK = 1e-9

#: The relative difference allowed between the totals of `Transport`'s
#: `row_sums` and `col_sums`: marginals written in float32 (`1 / 3` rounded)
#: agree to about 1e-7; the column sums are then scaled to the rows' total.
TRANSPORT_TOTAL_SLACK = 1e-6

#: The relative slack of the float64 test `n * min_value <= total <= n *
#: max_value` (`Simplex`'s set is not empty), up to the rounding of `n * bound`.
FLOAT64_FEASIBILITY_SLACK = 1e-12
