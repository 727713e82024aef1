"""Every argument check of the package, one function per kind of value.

Each check is `check_x(owner, name, value, ...)`: `owner` is the class or
function the error names first, `name` the argument, `value` what was passed.
It returns the normalized value, and that is what the caller stores, so
`get_config()` gives back exactly what the checks accepted. Each kind of
mistake has one wording, `"{owner}: `{name}` must be ..., got {value!r}."`,
raised in `__init__` where the user wrote it; the checks that need the
weight's shape (`resolve_axis`, `check_fits`, `check_matrix`, ...) run when
the constraint is first traced, before any weight is written.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np

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


def check_axis(owner, name, value):
    """None, an int, or a non-empty list/tuple of distinct ints (a list is returned as a list)."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in items):
        raise ValueError(
            f"{owner}: `{name}` must be None, an int or a list/tuple of ints, got {value!r}."
        )
    if len({int(a) for a in items}) != len(items):
        raise ValueError(f"{owner}: `{name}` must not repeat an axis, got {value!r}.")
    return [int(a) for a in items] if isinstance(value, (list, tuple)) else int(value)


def check_one_axis(owner, name, value):
    """Exactly one int axis (an order, a sort, runs along it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: `{name}` must be one int, got {value!r}.")
    return int(value)


def check_constraint(owner, name, value):
    """A constraint given as an instance, a name or a config, resolved to a callable."""
    from kconstraints.serialization import get  # serialization imports the registry

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


def _broadcast(a, b):
    """The broadcast shape of two shapes (NumPy rules), or None if they do not broadcast."""
    a, b = tuple(a), tuple(b)
    width = max(len(a), len(b))
    a, b = (1,) * (width - len(a)) + a, (1,) * (width - len(b)) + b
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b, strict=True))
