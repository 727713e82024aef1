"""The base class, the registry and the numerics shared by every constraint."""

from __future__ import annotations

import inspect
import math
import numbers
import re

import keras
import numpy as np
from keras import ops

PACKAGE = "kconstraints"

# Class name and snake_case alias -> class, filled by `register`.
_REGISTRY: dict[str, type] = {}


def snake_case(name: str) -> str:
    """`MaxNorm` -> `max_norm`, `L1Ball` -> `l1_ball`, `PSD` -> `psd`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def register(cls):
    """Register `cls` with Keras (safe-mode loading) and with `kconstraints.get`."""
    cls = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    _REGISTRY[cls.__name__] = cls
    _REGISTRY[snake_case(cls.__name__)] = cls
    return cls


def _config_value(value):
    """Make one `__init__` argument JSON-ready."""
    if isinstance(value, (keras.constraints.Constraint, keras.regularizers.Regularizer)):
        return keras.saving.serialize_keras_object(value)
    if isinstance(value, (list, tuple)):
        return [_config_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_config_value(value):
    """Undo `_config_value`: nested objects come back as objects."""
    if isinstance(value, dict) and "class_name" in value:
        return keras.saving.deserialize_keras_object(value)
    if isinstance(value, list):
        return [_from_config_value(v) for v in value]
    return value


class Constraint(keras.constraints.Constraint):
    """Base class of every kconstraints constraint.

    A constraint is a stateless callable `w -> P(w)` that the optimizer
    applies after each step. Subclasses implement `project(w)`, which
    receives a tensor and may compute in any float dtype; `__call__` checks
    the dtype and returns the result in the weight's own dtype and shape.

    Every `__init__` argument is stored as an attribute of the same name, so
    `get_config()` needs no override.
    """

    #: True when P acts on each entry on its own (so `Partial` may mask it).
    elementwise: bool = False

    def __call__(self, w):
        w = ops.convert_to_tensor(w)
        dtype = keras.backend.standardize_dtype(w.dtype)
        if "float" not in dtype:
            raise TypeError(
                f"{type(self).__name__} constrains floating-point weights, "
                f"but got a weight of dtype {dtype}."
            )
        return ops.cast(self.project(w), dtype)

    def project(self, w):
        raise NotImplementedError(f"{type(self).__name__} must implement project(w).")

    def get_config(self):
        params = inspect.signature(type(self).__init__).parameters
        return {
            name: _config_value(getattr(self, name))
            for name, p in params.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{k: _from_config_value(v) for k, v in config.items()})

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------- validation


def check_number(owner, name, value, *, low=None, high=None, low_open=False):
    """A finite real number within [low, high] (or (low, high] if low_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{owner}: `{name}` must be a real number, got {value!r} "
            f"of type {type(value).__name__}."
        )
    value = float(value)
    bad = not math.isfinite(value)
    bad |= low is not None and (value <= low if low_open else value < low)
    bad |= high is not None and value > high
    if bad:
        lo = "(" if low_open else "["
        rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"{owner}: `{name}` must be finite and in {rng}, got {value!r}.")
    return value


def check_array(owner, name, value):
    """A real scalar or array of reals, returned as float64 NumPy."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{owner}: `{name}` must be numeric, got {value!r}.") from err
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{owner}: `{name}` must be real numbers, got {value!r}.")
    arr = arr.astype("float64")
    if np.isnan(arr).any():
        raise ValueError(f"{owner}: `{name}` must not contain NaN, got {value!r}.")
    return arr


def check_axis(owner, axis, name="axis"):
    """None, an int or a list/tuple of distinct ints; returned as given."""
    items = axis if isinstance(axis, (list, tuple)) else [axis]
    if axis is None:
        return None
    if not items or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in items):
        raise ValueError(
            f"{owner}: `{name}` must be None, an int or a list/tuple of ints, got {axis!r}."
        )
    if len(set(int(a) for a in items)) != len(items):
        raise ValueError(f"{owner}: `{name}` has repeated entries: {axis!r}.")
    return list(axis) if isinstance(axis, (list, tuple)) else int(axis)


def resolve_axis(owner, axis, shape, name="axis"):
    """Normalise `axis` against a weight's shape to a sorted tuple of axes."""
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (list, tuple)) else [axis]
    out = []
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"{owner}: `{name}`={axis!r} is out of range for a weight of "
                f"shape {tuple(shape)} ({ndim} dimensions)."
            )
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(
            f"{owner}: `{name}`={axis!r} names one axis twice for shape {tuple(shape)}."
        )
    return tuple(sorted(out))


# ------------------------------------------------------------------ numerics


def compute_dtype(dtype) -> str:
    """Reductions of half-precision weights run in float32."""
    dtype = keras.backend.standardize_dtype(dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def upcast(w):
    return ops.cast(w, compute_dtype(w.dtype))


def l2_norms(x, axes):
    return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True))


# Keras 3.15 promotes the operands of binary ops such as `ops.maximum`,
# `ops.minimum` and `ops.clip` through `keras.backend.result_type`, which maps
# float64 to float32 (so `ops.maximum(a, a)` of a float64 torch tensor is
# float32). Projections therefore use Python arithmetic operators and
# `ops.where`, which keep the operands' dtype on every backend.


def scalar(value, like):
    """`value` as a 0-d tensor of `like`'s dtype."""
    return ops.convert_to_tensor(value, dtype=like.dtype)


def clamp(x, low=None, high=None):
    """`min(max(x, low), high)` in `x`'s dtype; bounds are Python numbers or arrays."""
    if low is not None:
        low = ops.convert_to_tensor(low, dtype=x.dtype)
        x = ops.where(x < low, low, x)
    if high is not None:
        high = ops.convert_to_tensor(high, dtype=x.dtype)
        x = ops.where(x > high, high, x)
    return x


class Constant:
    """A float64 NumPy array that projections read as a tensor of the weight's dtype.

    torch.compile can not trace Keras's conversion of a NumPy array (Dynamo
    does not read `ndarray.dtype`), so every conversion inside a compiled
    step was a graph break: 6 for a `Clip` with two bounds, measured with
    torch 2.13. The float32 tensor is therefore made once, here, outside any
    trace; half-precision weights get it cast, and only float64 weights get
    the float64 array converted at the call. A 0-d array is kept as a Python
    float, which every backend traces as a literal.
    """

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)
        if array.ndim:
            self._tensor = ops.convert_to_tensor(array, dtype="float32")
        else:
            self._tensor = float(array)

    def like(self, x):
        """The constant as a tensor of `x`'s dtype."""
        dtype = keras.backend.standardize_dtype(x.dtype)
        if isinstance(self._tensor, float):
            return ops.convert_to_tensor(self._tensor, dtype=dtype)
        if dtype == "float64":
            return ops.convert_to_tensor(self.array, dtype=dtype)
        return ops.cast(self._tensor, dtype)


def safe_divisor(x):
    """Non-negative `x` with its zeros replaced by ones: a divisor that is never 0."""
    return x + ops.cast(x == 0, x.dtype)
