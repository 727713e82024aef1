"""Every check of the package's arguments and of the weights it is given, one function per kind.

Each check is `check_x(owner, name, value, ...)`: `owner` is the class or
function the error names first, `name` the argument, `value` what was passed.
It returns the normalized value, and that is what the caller stores, so
`get_config()` gives back exactly what the checks accepted. Each kind of
mistake has one wording, `"{owner}: `{name}` must be ..., got {value!r}."`,
raised in `__init__` where the user wrote it; the checks that need the
weight's shape (`resolve_axis`, `check_fits`, `check_matrix`, ...) run when
the constraint is first traced, before any weight is written. What a walk
over a model or a list meets on its way (a layer `certify.lipschitz_bound`
knows no bound of, an item that is neither a variable nor a layer) is
reported where the walk finds it.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np

from kconstraints._constants import (
    FLOAT64_FEASIBILITY_SLACK,
    FLOAT64_RESIDUAL_SLACK,
    TRANSPORT_TOTAL_SLACK,
)
from kconstraints.serialization import get

# ------------------------------------------------------------ __init__ arguments


def check_number(owner, name, value, *, low=None, high=None, low_open=False):
    """A finite real number in [low, high] (or (low, high] if `low_open`), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{owner}: `{name}` must be a real number, got {value!r} "
            f"of type {type(value).__name__}."
        )
    number = float(value)
    bad = not math.isfinite(number)
    bad |= low is not None and (number <= low if low_open else number < low)
    bad |= high is not None and number > high
    if bad:
        lo = "(" if low_open else "["
        span = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"{owner}: `{name}` must be finite and in {span}, got {value!r}.")
    return number


def check_int(owner, name, value, *, low=1):
    """An integer >= `low` (not a bool), as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: `{name}` must be an int >= {low}, got {value!r}.")
    return int(value)


def check_bool(owner, name, value):
    """True or False, nothing else (not 0/1)."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: `{name}` must be True or False, got {value!r}.")
    return value


def check_choice(owner, name, value, choices):
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}: `{name}` must be one of {choices}, got {value!r}.")
    return value


def check_text(owner, name, value):
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}: `{name}` must be a non-empty string, got {value!r}.")
    return value


def check_ordered(owner, low_name, low, high_name, high):
    """Two numbers or arrays with `low <= high` everywhere (they must broadcast together)."""
    check_broadcast(owner, low_name, np.shape(low), high_name, np.shape(high))
    if np.any(np.asarray(low) > np.asarray(high)):
        raise ValueError(
            f"{owner}: `{low_name}` must be <= `{high_name}` everywhere, got "
            f"{low_name}={low!r}, {high_name}={high!r}."
        )


def check_array(owner, name, value):
    """Real numbers (a scalar or an array, no NaN): a float64 array, or a float if 0-d."""
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged lists and the like
        raise ValueError(f"{owner}: `{name}` must be numeric, got {value!r}.") from err
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{owner}: `{name}` must be real numbers, got {value!r}.")
    arr = arr.astype("float64")
    if np.isnan(arr).any():
        raise ValueError(f"{owner}: `{name}` must not contain NaN, got {value!r}.")
    return arr if arr.ndim else float(arr)


def check_positive_vector(owner, name, value):
    """A non-empty 1-D array of finite numbers > 0 (marginals, weights): a float64 array."""
    arr = check_array(owner, name, value)
    if np.ndim(arr) != 1 or not np.size(arr):
        raise ValueError(
            f"{owner}: `{name}` must be a non-empty 1-D array of numbers > 0, got {value!r}."
        )
    bad = arr[~(np.isfinite(arr) & (arr > 0))]
    if bad.size:
        raise ValueError(
            f"{owner}: `{name}` must hold finite numbers > 0, got {bad[:3].tolist()} in {value!r}."
        )
    return arr


def check_mask(owner, name, value):
    """0/1 numbers or booleans, as a NumPy array (booleans stay booleans)."""
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged: check_array names the problem
        arr = None
    if arr is not None and arr.dtype == bool:
        return arr
    arr = np.asarray(check_array(owner, name, value))
    outside = ~np.isin(arr, (0.0, 1.0))
    if outside.any():
        bad = np.unique(arr[outside])[:3].tolist()
        raise ValueError(f"{owner}: `{name}` must hold only 0 and 1 (or booleans), got {bad}.")
    return arr


def check_broadcast(owner, name_a, shape_a, name_b, shape_b):
    """Two array shapes that broadcast together (NumPy rules)."""
    if _broadcast(shape_a, shape_b) is None:
        raise ValueError(
            f"{owner}: `{name_a}` of shape {tuple(shape_a)} and `{name_b}` of shape "
            f"{tuple(shape_b)} do not broadcast together."
        )


#: The `axis` that names every axis but the last: one Dense unit's or one
#: Conv filter's incoming weights, whatever the kernel's rank.
FAN_IN = "fan_in"


def check_axis(owner, name, value):
    """None, `"fan_in"`, an int, or a non-empty list/tuple of distinct ints (a list stays a list)."""
    if value is None or value == FAN_IN:
        return value
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in items):
        raise ValueError(
            f"{owner}: `{name}` must be None, {FAN_IN!r}, an int or a list/tuple of ints, "
            f"got {value!r}."
        )
    if len({int(a) for a in items}) != len(items):
        raise ValueError(f"{owner}: `{name}` must not repeat an axis, got {value!r}.")
    return [int(a) for a in items] if isinstance(value, (list, tuple)) else int(value)


def check_one_axis(owner, name, value):
    """Exactly one int axis (an order, a sort, runs along it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: `{name}` must be one int, got {value!r}.")
    return int(value)


def check_at_least_one(owner, **named):
    """At least one of the named arguments is not None (`Clip`'s and `EigenBand`'s bounds)."""
    if all(value is None for value in named.values()):
        names = " and ".join(f"`{name}`" for name in named)
        raise ValueError(f"{owner}: give at least one of {names}.")


def check_at_most(owner, name, value, limit_name, limit):
    """Two numbers, already checked, with `value <= limit`."""
    if value > limit:
        raise ValueError(
            f"{owner}: `{name}` must be <= `{limit_name}`, got {name}={value!r}, "
            f"{limit_name}={limit!r}."
        )


def check_k_or_density(owner, k, density):
    """Exactly one of `k` (an int >= 0) and `density` (in (0, 1]); returns both, normalized."""
    if (k is None) == (density is None):
        raise ValueError(
            f"{owner}: pass exactly one of `k` and `density`, got k={k!r}, density={density!r}."
        )
    if k is not None:
        return check_int(owner, "k", k, low=0), None
    return None, check_number(owner, "density", density, low=0, high=1, low_open=True)


def check_proper_band(owner, min_value, max_value):
    """A band of singular values that is not all of [0, inf): no cap needs `min_value > 0`."""
    if max_value is None and min_value == 0:
        raise ValueError(
            f"{owner}: with `max_value`=None, `min_value` must be > 0 (the band "
            f"[0, inf) holds every matrix), got min_value={min_value!r}."
        )


def check_normal(owner, name, value):
    """None, or real numbers with at least one entry and not all zero, as a float64 array."""
    if value is None:
        return None
    arr = np.asarray(check_array(owner, name, value))
    if arr.ndim == 0 or arr.size == 0 or not np.isfinite(arr).all() or not np.any(arr):
        raise ValueError(
            f"{owner}: `{name}` must be a finite, non-zero array with at least one dimension, "
            f"got {value!r}."
        )
    return arr


def check_positive_weights(owner, name, value):
    """Finite numbers > 0, at least one, in an array of at least one dimension (float64)."""
    arr = np.asarray(check_array(owner, name, value))
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(
            f"{owner}: `{name}` must be an array with at least one entry, got {value!r}."
        )
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{owner}: `{name}` must be finite and > 0 everywhere, got {float(arr[index])!r} "
            f"at index {index}."
        )
    return arr


def check_system(owner, matrix, offset):
    """`matrix` (k rows, at least 2 dims) and `offset` (a number or k numbers).

    Returns the float64 matrix and the offset as `check_array` returns it (a
    float, or an array of k numbers).
    """
    a = np.asarray(check_array(owner, "matrix", matrix))
    if a.ndim < 2 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(
            f"{owner}: `matrix` must be a finite array of shape (rows, n) or (rows, *slice "
            f"shape), got {matrix!r}."
        )
    b = check_array(owner, "offset", offset)
    if not np.isfinite(b).all() or np.shape(b) not in ((), (a.shape[0],)):
        raise ValueError(
            f"{owner}: `offset` must be a finite number or {a.shape[0]} numbers (one per row "
            f"of `matrix`), got {offset!r}."
        )
    return a, b


def check_full_row_rank(owner, rank, flat, x0, b):
    """`flat` (k x n, of numerical `rank`) has k = rank; else say whether `flat x = b` is solvable.

    `x0` is the least-norm least-squares solution, whose residual tells.
    """
    k, n = flat.shape
    if rank == k:
        return
    residual = float(np.linalg.norm(flat @ x0 - b))
    if residual <= FLOAT64_RESIDUAL_SLACK * max(1.0, np.abs(b).max()):
        verdict = "has a solution: drop the dependent rows"
    else:
        verdict = "has no solution: no weight satisfies these equations"
    raise ValueError(
        f"{owner}: `matrix` must have full row rank, got rank {rank} for {k} "
        f"rows of {n} entries; `A w = offset` {verdict} (least-squares residual "
        f"{residual:.3g})."
    )


def check_linear_system(owner, matrix_name, matrix, offset_name, offset, columns=None):
    """`matrix` of shape `(k, n)` (None: no rows) and `offset` (a number or k numbers; None: 0).

    `columns`, a matrix already checked, fixes `n`. Returns the float64
    matrix (or None) and the `k` offsets as a float64 array (or None).
    """
    if matrix is None:
        if offset is not None:
            raise ValueError(f"{owner}: `{offset_name}` given without `{matrix_name}`.")
        return None, None
    a = np.asarray(check_array(owner, matrix_name, matrix))
    if a.ndim != 2 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(
            f"{owner}: `{matrix_name}` must be a finite array of shape (rows, n), n a "
            f"slice's size, got {matrix!r}."
        )
    if columns is not None and a.shape[1] != columns.shape[1]:
        raise ValueError(
            f"{owner}: `{matrix_name}` of shape {a.shape} must have as many columns as the "
            f"other matrix, of shape {columns.shape}."
        )
    b = check_array(owner, offset_name, 0.0 if offset is None else offset)
    if not np.isfinite(b).all() or np.shape(b) not in ((), (a.shape[0],)):
        raise ValueError(
            f"{owner}: `{offset_name}` must be a finite number or {a.shape[0]} numbers (one "
            f"per row of `{matrix_name}`), got {offset!r}."
        )
    return a, np.broadcast_to(b, (a.shape[0],)).copy()


def check_consistent_equalities(owner, a, b, x0, rank):
    """`a x = b` has a solution: `x0`, its least-squares solution of `rank`, solves it."""
    residual = float(np.linalg.norm(a @ x0 - b))
    if residual > FLOAT64_RESIDUAL_SLACK * max(1.0, float(np.abs(b).max())):
        raise ValueError(
            f"{owner}: `A x = b` has no solution: `A` of shape {a.shape} has rank {rank} and "
            f"the least-squares residual is {residual:.3g}."
        )


def check_constant_rows(owner, g, h, x0, constant):
    """Rows `i` of `g` constant on `{A x = b}` (`constant[i]`: `g_i x = g_i x0`) have `g_i x0 <= h_i`."""
    values = g @ x0
    slack = FLOAT64_RESIDUAL_SLACK * np.maximum(1.0, np.abs(h) + np.abs(g) @ np.abs(x0))
    bad = np.flatnonzero(constant & (values > h + slack))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{owner}: row {i} of `G` is constant on {{x : A x = b}}, where G[{i}] x = "
            f"{values[i]:.6g} > h[{i}] = {h[i]:.6g}: no x satisfies both."
        )


def check_farkas(owner, g, h, x0, weights):
    """Raise: `weights >= 0` combine the rows of `g x <= h` into one no `x` on `{A x = b}` meets."""
    if weights is None:
        return
    rows = np.flatnonzero(weights > 0)
    scaled = weights / weights.max()
    shown = ", ".join(f"{scaled[i]:.4g} * row {i}" for i in rows[:6])
    more = ", ..." if rows.size > 6 else ""
    raise ValueError(
        f"{owner}: no x satisfies A x = b and G x <= h: the rows of `G x <= h` summed as "
        f"{shown}{more} give {scaled @ g @ x0:.6g} <= {scaled @ h:.6g} for every x with "
        "A x = b."
    )


def check_elementwise(owner, name, constraint):
    """A constraint (already resolved) that says it acts on each entry alone."""
    if not getattr(constraint, "elementwise", False):
        raise ValueError(
            f"{owner}: `{name}` must be elementwise (act on each entry alone), got "
            f"{constraint!r}, which acts on whole slices or does not say it is "
            "elementwise; apply it to the whole weight or use kconstraints' twin."
        )
    return constraint


def check_constraint(owner, name, value):
    """A constraint given as an instance, a name or a config, resolved to a callable."""
    try:
        resolved = get(value)
    except ValueError as err:
        raise ValueError(f"{owner}: `{name}`: {err}") from err
    if not callable(resolved):
        raise ValueError(f"{owner}: `{name}` must be a constraint, got {value!r}.")
    return resolved


def check_constraints(owner, name, value):
    """A non-empty list of constraints (instances, names or configs), resolved."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{owner}: `{name}` must be a non-empty list of constraints, got {value!r}."
        )
    return [check_constraint(owner, f"{name}[{i}]", v) for i, v in enumerate(value)]


def check_sparsity(owner, name, value):
    """A fraction of zeros in [0, 1), as a float: 1 is out, as a `TopK` keeps at least one entry."""
    number = check_number(owner, name, value, low=0, high=1)
    if number == 1:
        raise ValueError(
            f"{owner}: `{name}` must be < 1 (TopK keeps at least one entry), got {value!r}."
        )
    return number


def check_model(owner, value):
    """A `keras.Model`."""
    if not isinstance(value, keras.Model):
        raise ValueError(f"{owner}: expected a keras.Model, got {type(value).__name__}: {value!r}.")
    return value


def check_variable(owner, value):
    """A `keras.Variable` (a backend-native variable has no constraint the optimizer reads)."""
    if not isinstance(value, keras.Variable):
        raise TypeError(
            f"{owner}: expected a keras.Variable, got {type(value).__name__}; "
            "a backend-native variable or tensor has no constraint Keras's optimizer reads."
        )
    return value


def check_keywords(owner, callee, given, known, note=""):
    """Keyword arguments `given` that `callee` takes (`known`): it would drop any other."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(
            f"{owner}: {callee} would silently ignore {unknown}; it takes {sorted(known)}{note}."
        )


# --------------------------------------------------------------- the weight


def check_float_weight(owner, dtype):
    """A floating-point weight dtype, standardized (`float32`, `bfloat16`, ...)."""
    dtype = keras.backend.standardize_dtype(dtype)
    if "float" not in dtype:
        raise TypeError(
            f"{owner} constrains floating-point weights, but got a weight of dtype {dtype}."
        )
    return dtype


def resolve_axis(owner, name, axis, shape):
    """`axis` (as `check_axis` returns it) against a weight's shape: a sorted tuple of axes."""
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    if axis == FAN_IN:  # every axis but the last; a vector is one slice
        return tuple(range(max(ndim - 1, 1)))
    items = axis if isinstance(axis, list) else [axis]
    if any(not -ndim <= a < ndim for a in items):
        raise ValueError(
            f"{owner}: `{name}`={axis!r} is out of range for a weight of "
            f"shape {tuple(shape)} ({ndim} dimensions)."
        )
    resolved = sorted(a % ndim for a in items)
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            f"{owner}: `{name}`={axis!r} names one axis twice for a weight of shape {tuple(shape)}."
        )
    return tuple(resolved)


def check_fits(owner, name, array_shape, shape):
    """An array of `array_shape` broadcasts to a weight of `shape` without growing it.

    Plain tuples, no NumPy: this runs while torch.compile traces.
    """
    if _broadcast(array_shape, shape) != tuple(shape):
        raise ValueError(
            f"{owner}: `{name}` of shape {tuple(array_shape)} does not broadcast to the "
            f"weight's shape {tuple(shape)}."
        )


def check_matrix(owner, shape):
    """At least two dimensions: a matrix, or a stack or reshape of matrices."""
    if len(shape) < 2:
        raise ValueError(
            f"{owner} constrains matrices, but got a weight of shape {tuple(shape)} "
            f"({len(shape)} dimensions)."
        )


def check_square(owner, shape):
    """Square matrices in the last two axes."""
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(
            f"{owner} needs square matrices in the last two axes, but got a weight of "
            f"shape {tuple(shape)}."
        )


def check_matrix_shape(owner, shape, rows, columns, names):
    """Matrices of shape `(rows, columns)` in the last two axes; `names` says where those come from."""
    if len(shape) < 2 or tuple(shape[-2:]) != (rows, columns):
        raise ValueError(
            f"{owner} needs matrices of shape {(rows, columns)} ({names}) in the last two axes, "
            f"but got a weight of shape {tuple(shape)}."
        )


def check_rank(owner, shape, what, low=2, high=None):
    """A weight of `low` to `high` dimensions (None: no upper limit); `what` names the kind."""
    if len(shape) < low or (high is not None and len(shape) > high):
        raise ValueError(f"{owner} needs {what}, but got a weight of shape {tuple(shape)}.")


def check_conv_kernel(owner, shape):
    """A Conv1D/2D/3D kernel `(*spatial, in, out)`, or a Dense kernel (no spatial axis)."""
    what = (
        "a Conv1D/2D/3D kernel (*spatial, in_channels, out_channels) or a Dense kernel "
        "(input_dim, units)"
    )
    check_rank(owner, shape, what, low=2, high=5)


def check_slice_shape(owner, name, given, axes, shape):
    """`given` (an array's shape) is the slice's shape, or flat with the slice's size.

    Plain tuples, no NumPy: this runs while torch.compile traces.
    """
    slice_shape = tuple(shape[a] for a in axes)
    size = math.prod(slice_shape)
    if tuple(given) not in (slice_shape, (size,)):
        raise ValueError(
            f"{owner}: `{name}` of shape {tuple(given)} does not fit a slice of the weight: "
            f"the slice over axes {axes} of shape {tuple(shape)} has shape {slice_shape} "
            f"({size} entries); give `{name}` that shape or {size} entries."
        )


def check_columns(owner, name, matrix_shape, axes, shape):
    """A matrix of `matrix_shape` has one column per entry of a slice over `axes` of `shape`.

    Plain tuples, no NumPy: this runs while torch.compile traces.
    """
    size = math.prod([shape[a] for a in axes])
    if matrix_shape[-1] != size:
        raise ValueError(
            f"{owner}: `{name}` of shape {tuple(matrix_shape)} does not fit a slice of the "
            f"weight: the slice over axes {axes} of shape {tuple(shape)} has {size} entries, "
            f"`{name}` has {matrix_shape[-1]} columns."
        )


def check_count_fits(owner, k, n, axis, shape):
    """`k` entries kept per slice of `n` entries: `k <= n`."""
    if k > n:
        raise ValueError(
            f"{owner}: `k`={k} is larger than a slice, which has {n} entries "
            f"(axis={axis!r}, weight of shape {tuple(shape)})."
        )


def check_groups_fit(owner, axis, m, shape, resolved):
    """The weight's length along `resolved` (the axis `axis` names) is a multiple of `m`."""
    length = shape[resolved]
    if length % m:
        raise ValueError(
            f"{owner}: the weight's length along `axis`={axis} is {length}, "
            f"not a multiple of `m`={m} (weight of shape {tuple(shape)})."
        )


def check_equal_totals(owner, name_a, a, name_b, b):
    """Two arrays of numbers > 0 with equal sums, within `TRANSPORT_TOTAL_SLACK` (relative)."""
    total_a, total_b = float(np.sum(a)), float(np.sum(b))
    if abs(total_a - total_b) > TRANSPORT_TOTAL_SLACK * max(total_a, total_b):
        raise ValueError(
            f"{owner}: `{name_a}` and `{name_b}` must have equal totals, got "
            f"sum({name_a}) = {total_a!r} and sum({name_b}) = {total_b!r}."
        )


def check_simplex_feasible(owner, n, total, min_value, max_value):
    """A slice of `n` entries in [min_value, max_value] can sum to `total` (up to rounding).

    Returns which bound, if any, leaves a single point: "min", "max" or None.
    """
    problem = _bounded_sum(n, "n", total, min_value, max_value)
    if problem is None or problem in ("min", "max"):
        return problem
    raise ValueError(
        f"{owner}: no slice of {n} entries in [min_value, max_value] = "
        f"[{min_value!r}, {max_value!r}] sums to `total`={total!r}: {problem}."
    )


def check_weighted_feasible(owner, weights_sum, total, min_value, max_value):
    """Entries in [min_value, max_value] can reach `<weights, x> = total` (up to rounding).

    `weights_sum` is the sum of the (positive) weights. Returns which bound,
    if any, leaves a single point: "min", "max" or None.
    """
    problem = _bounded_sum(weights_sum, "sum(weights)", total, min_value, max_value)
    if problem is None or problem in ("min", "max"):
        return problem
    raise ValueError(
        f"{owner}: no x in [min_value, max_value] = [{min_value!r}, {max_value!r}] has "
        f"<weights, x> = `total`={total!r}: {problem}."
    )


def _bounded_sum(weight, label, total, min_value, max_value):
    """Where `weight * min_value <= total <= weight * max_value` fails, the sentence saying so.

    Else "min" or "max" when that bound leaves a single point (up to a
    float64 rounding slack), or None.
    """
    floor = weight * min_value
    cap = math.inf if max_value is None else weight * max_value
    scale = max(abs(total), abs(floor), abs(cap) if cap < math.inf else 0, 1)
    slack = FLOAT64_FEASIBILITY_SLACK * scale
    if floor > total + slack:
        return f"{label} * min_value = {weight!r} * {min_value!r} = {floor!r} > total"
    if cap < total - slack:
        return f"{label} * max_value = {weight!r} * {max_value!r} = {cap!r} < total"
    if floor >= total - slack:
        return "min"
    return "max" if cap <= total + slack else None


def _broadcast(a, b):
    """The broadcast shape of two shapes (NumPy rules), or None if they do not broadcast."""
    a, b = tuple(a), tuple(b)
    width = max(len(a), len(b))
    a, b = (1,) * (width - len(a)) + a, (1,) * (width - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b, strict=True))
