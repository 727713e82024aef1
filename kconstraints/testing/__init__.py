"""Check any constraint, a kconstraints one or your own, on the active Keras backend.

`check_constraint(constraint, shape, ...)` tries it on weights that
hypothesis generates (normal, tied, equal, one huge entry, mixed
magnitudes, subnormals, zeros; scales from 1e-30 to 1e30 within each
dtype; float16 to float64) and checks shape, dtype, finiteness,
idempotence, feasibility, a reference, the compiled call, torch graph
breaks, empty weights, serialization, a compiled `fit()` step, and, for a
convex set, non-expansiveness and optimality. A failure raises an
`AssertionError` naming the property and the smallest input that fails.
`python -m kconstraints.testing MODULE:NAME --shape 64,32` runs it under
each backend. Needs hypothesis (`pip install "kconstraints[testing]"`).
"""

from kconstraints.testing._check import PROPERTIES, Report, check_constraint, per_shape
from kconstraints.testing._inputs import DTYPES, EXPONENTS, KINDS, Input, varied_shapes

__all__ = [
    "DTYPES",
    "EXPONENTS",
    "KINDS",
    "PROPERTIES",
    "Input",
    "Report",
    "check_constraint",
    "per_shape",
    "varied_shapes",
]
