"""The base class of every constraint, and the config and repr they share."""

from __future__ import annotations

import inspect
import itertools

import keras
import numpy as np
from keras import ops

from kconstraints._backend import EAGER_CACHE, eager_compiled
from kconstraints._checks import check_float_weight

#: Stamps of attribute assignments, in order: what `Configurable._version` compares.
_STAMPS = itertools.count()


def _to_config(value):
    """One `__init__` argument made JSON-ready: nested objects as their Keras config."""
    if isinstance(value, (keras.constraints.Constraint, keras.regularizers.Regularizer)):
        return keras.saving.serialize_keras_object(value)
    if isinstance(value, (list, tuple)):
        return [_to_config(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_config(value):
    """Undo `_to_config`: nested configs come back as objects."""
    if isinstance(value, dict) and "class_name" in value:
        return keras.saving.deserialize_keras_object(value)
    if isinstance(value, list):
        return [_from_config(v) for v in value]
    return value


def _show(value):
    """A value in a repr: arrays by their shape, nested constraints by their repr."""
    if isinstance(value, np.ndarray) and value.ndim:
        return f"<array of shape {value.shape}>"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


class Configurable:
    """Config, repr and error owner derived from `__init__`'s signature.

    Every `__init__` argument is stored, normalized by its check, as an
    attribute of the same name; `get_config()` returns them, `from_config`
    rebuilds the object from that, and `repr` shows them.

    Assigning an attribute stamps the object, so that a projection compiled
    from the old values (`Constraint.__call__`, eager on JAX) is traced again,
    and copies and pickles leave the compiled projection out.
    """

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        state = self.__dict__
        state.pop(EAGER_CACHE, None)
        state["_stamp"] = next(_STAMPS)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop(EAGER_CACHE, None)
        return state

    def _version(self):
        """The stamps of this object and of every `Configurable` its attributes hold, nested.

        It changes when any of them is assigned an attribute: a `Compose`
        whose inner constraint's argument was changed is traced again too.
        """
        return tuple(_stamps(self, []))

    @property
    def _owner(self):
        """The name that error messages start with."""
        return type(self).__name__

    @classmethod
    def _arguments(cls):
        params = inspect.signature(cls.__init__).parameters
        return [
            name
            for name, p in params.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_config(self):
        return {name: _to_config(getattr(self, name)) for name in self._arguments()}

    @classmethod
    def from_config(cls, config):
        return cls(**{k: _from_config(v) for k, v in config.items()})

    def __repr__(self):
        args = ", ".join(f"{k}={_show(getattr(self, k))}" for k in self._arguments())
        return f"{self._owner}({args})"


def _stamps(value, out):
    """`out` with the stamps of the `Configurable`s in `value`: itself, in a list, an attribute."""
    if isinstance(value, Configurable):
        out.append(value.__dict__.get("_stamp"))
        for item in value.__dict__.values():
            _stamps(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _stamps(item, out)
    return out


class Constraint(Configurable, keras.constraints.Constraint):
    """Base class of every kconstraints constraint.

    A constraint is a stateless callable `w -> P(w)` that the optimizer
    applies after each step. Subclasses implement `project(w)`, which
    receives a tensor with at least one entry and may compute in any float
    dtype; `__call__` checks the dtype and states what every constraint
    returns. The base class itself is the identity, as
    `keras.constraints.Constraint` is.
    Every `__init__` argument is stored as an attribute of the same name, so
    `get_config()` needs no override.

    Non-finite weights: a constraint never raises on a NaN or an infinity,
    and never lets one spread. Each entry (elementwise constraints), slice
    along `axis`, or matrix is projected on its own, and every one that
    holds only finite values comes out as if the others did too; one that
    holds a NaN or an infinity may come out non-finite. `violations` reports
    such a weight as NaN.
    """

    #: True when P acts on each entry on its own (so `Partial` may mask it).
    elementwise: bool = False

    def __call__(self, w):
        """`P(w)`, the weight constrained: what every constraint returns.

        Args:
            w: a floating-point weight (a tensor, a variable's value, an array).

        Returns:
            A tensor of the weight's shape and dtype: the projection runs in
            `project`'s dtype (float32 for float16/bfloat16 weights) and is
            cast back. A weight with no entries is returned as zeros of its
            shape. Each constraint's docstring says only what it adds.
        """
        w = ops.convert_to_tensor(w)
        dtype = check_float_weight(self._owner, w.dtype)
        if any(size == 0 for size in w.shape):  # no entries: nothing to project
            return ops.zeros(w.shape, dtype)
        return ops.cast(eager_compiled(self, self.project, w, self._version), dtype)

    def project(self, w):
        """P(w), in any float dtype; subclasses override it (the base is the identity)."""
        return w

    @property
    def exact(self):
        """This constraint with every per-step estimate replaced by the exact method.

        A constraint whose cheap per-step method only estimates (such as
        `SpectralNorm(method="power")`) returns its exact twin, which
        `kconstraints.project`, `violations` and `EnforceConstraints` use. The
        default is the constraint itself, or, when one of its arguments holds
        constraints (`Compose`, `Intersection`, `Partial`), a copy holding
        their exact twins.
        """
        config = {name: getattr(self, name) for name in self._arguments()}
        exact = {name: exact_of(value) for name, value in config.items()}
        if all(exact[name] is config[name] for name in config):
            return self
        return type(self)(**exact)


def exact_of(value):
    """`value.exact` for a constraint, each item's for a list or tuple; anything else as it is.

    A callable that is not a kconstraints constraint (a `keras.constraints`
    one, a function) has no estimate to replace.
    """
    if isinstance(value, Constraint):
        return value.exact
    if isinstance(value, (list, tuple)):
        exact = [exact_of(v) for v in value]
        if all(a is b for a, b in zip(exact, value, strict=True)):
            return value
        return type(value)(exact)
    return value
