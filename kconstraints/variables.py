"""Constraints outside the optimizer step: project now, measure violations, constrain a variable.

Keras 3 applies `variable.constraint` in one place only: inside
`optimizer.apply`, right after the update of a trainable variable. Everything
else escapes it: initial weights, `set_weights()`, loaded checkpoints, the
moving average that `use_ema=True` writes back at the end of `fit()`,
non-trainable variables, and the steps a `LossScaleOptimizer` skips.
`project` closes those gaps on demand, `violations` measures them, and
`constrain` / `Variable` attach a constraint to a standalone variable, which
`keras.Variable(..., constraint=...)` silently does not do.
"""

from __future__ import annotations

import gc
import inspect
import math
import warnings

import keras
from keras import ops

from kconstraints._backend import after_each_step, sync_training_state
from kconstraints._base import exact_of
from kconstraints._checks import check_keywords, check_variable
from kconstraints._tensors import upcast
from kconstraints.serialization import get

__all__ = [
    "Variable",
    "constrain",
    "constrained_variables",
    "project",
    "project_after_step",
    "violations",
]


def _wrapped_layer(obj):
    """The Keras layer or model inside a wrapper that holds it as `.module`, else None.

    torch's `DistributedDataParallel` and `DataParallel` hold the model they
    wrap as `.module`; a wrapper of a wrapper is followed to the end.
    """
    passed = {id(obj)}
    inner = getattr(obj, "module", None)
    while inner is not None and not isinstance(inner, keras.layers.Layer):
        if id(inner) in passed:  # a wrapper that holds itself: no layer in there
            return None
        passed.add(id(inner))
        inner = getattr(inner, "module", None)
    return inner


def _variables(obj, out, seen):
    if isinstance(obj, keras.Variable):
        if id(obj) not in seen:
            seen.add(id(obj))
            out.append(obj)
    elif isinstance(obj, keras.layers.Layer):
        # During fit() on JAX the trainer holds the live weights: see _backend.py.
        sync_training_state(obj)
        _check_layer_constraints(obj)
        for v in obj.weights:
            _variables(v, out, seen)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _variables(item, out, seen)
    elif _wrapped_layer(obj) is not None:
        _variables(_wrapped_layer(obj), out, seen)
    else:
        raise TypeError(
            "Expected a keras.Variable, a layer or model, or a list of them, "
            f"got {obj!r} of type {type(obj).__name__}."
        )
    return out


def constrained_variables(obj):
    """The variables of `obj` that carry a constraint, each once, in order.

    Args:
        obj: a `keras.Variable`, a layer or model (all its weights, trainable
            or not), or a (nested) list of these. A wrapper that holds a
            model as `.module` (torch's `DistributedDataParallel` or
            `DataParallel`) stands for that model.

    Returns:
        A list of `keras.Variable`.
    """
    return [v for v in _variables(obj, [], set()) if getattr(v, "constraint", None) is not None]


def _value(variable):
    # stop_gradient: on torch a parameter's value requires grad, and the
    # projection must not build an autograd graph.
    return ops.stop_gradient(ops.convert_to_tensor(variable.value))


def project(obj, *, exact=True):
    """Apply every variable's constraint now: `w <- P(w)` for each constrained variable.

    The optimizer projects a trainable variable only after updating it. Call
    this after building a model, after `set_weights()` or `load_weights()`,
    and after anything else that writes weights, so that the model starts,
    and runs inference, inside its constraint set. Non-trainable variables
    with a constraint, which the optimizer never touches, are projected too.
    Each constraint is applied by its exact method (`Constraint.exact`): a
    weight that `SpectralNorm(method="power")` kept near its ball by an
    estimate ends inside it.

    During `fit()` on JAX, pass the model (not one of its layers or
    variables): the model's training state is synced first, so the
    projection is not lost when the trainer writes its state back.

    Args:
        obj: a `keras.Variable`, a layer or model (or a wrapper holding one
            as `.module`, such as torch's `DistributedDataParallel`), or a
            (nested) list of these.
        exact: `True` (default) applies each constraint's `exact` twin;
            `False` the constraint itself, as the optimizer does.

    Returns:
        The number of variables projected.

    Example:

    >>> import keras, kconstraints
    >>> layer = keras.layers.Dense(2, kernel_constraint=kconstraints.NonNeg())
    >>> layer.build((3,))
    >>> _ = layer.kernel.assign(-keras.ops.ones((3, 2)))
    >>> kconstraints.project(layer)
    1
    >>> float(keras.ops.convert_to_numpy(keras.ops.min(layer.kernel.value)))
    0.0
    """
    variables = constrained_variables(obj)
    for v in variables:
        constraint = exact_of(v.constraint) if exact else v.constraint
        v.assign(constraint(_value(v)))
    return len(variables)


_project = project  # project_after_step's keyword `project` hides the function


def project_after_step(optimizer, obj, *, project=True):
    """Make a torch optimizer apply the constraints of `obj` after every `optimizer.step()`.

    A torch training loop (a Keras model on the torch backend, often wrapped
    in `DistributedDataParallel`, trained by a `torch.optim` optimizer, as in
    Keras's guide to multi-GPU training with PyTorch) never runs Keras's
    optimizer, the only place Keras applies `variable.constraint`. This
    registers a hook on the torch optimizer that calls
    `kconstraints.project(obj, exact=False)` after each `step()` (each
    constraint as the Keras optimizer applies it: an estimate where it has
    one; call `kconstraints.project(obj)` at the end of an epoch to make
    those exact), on every rank: DDP
    leaves the same weights on every rank after a step, so every rank makes
    the same projection, with no communication.

    Args:
        optimizer: a `torch.optim.Optimizer` (any object with
            `register_step_post_hook`).
        obj: what `project` takes: the model, its `DistributedDataParallel`
            wrapper, layers or variables. It is walked again at every step,
            so variables created later are projected too.
        project: also project `obj` once now (default `True`), so training
            starts inside the constraint sets.

    Returns:
        torch's handle of the hook: `handle.remove()` stops the projections.

    Example:

    A Keras optimizer applies the constraints itself and takes no hook:

    >>> import keras, kconstraints
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_constraint=kconstraints.NonNeg())])
    >>> kconstraints.project_after_step(keras.optimizers.SGD(), model)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: project_after_step: `optimizer` must be a torch optimizer ...
    """
    constrained_variables(obj)  # a wrong `obj` fails here, not at the first step
    handle = after_each_step("project_after_step", optimizer, lambda: _project(obj, exact=False))
    if project:
        _project(obj)
    return handle


def _unique(path, taken):
    key, n = path, 1
    while key in taken:
        n += 1
        key = f"{path}#{n}"
    return key


def violations(obj):
    """The largest violation of each constrained variable: `max |w - P(w)|`.

    Zero exactly when the variable is in its constraint's set (for a true
    projection; a constraint that only moves part of the way, such as
    `MinMaxNorm(rate < 1)`, reports how far its next step would move).
    Measured with each constraint's exact method (`Constraint.exact`), so a
    `SpectralNorm(method="power")` weight reports its true excess, not the
    excess its estimate sees.
    A constraint whose projection is iterative may define `residual(w)`,
    the largest violation of its own constraints (0 in the set), which is
    reported instead: `Polyhedron`'s is `max(|A w - b|, G w - h, 0)`.
    Half-precision weights are compared in float32. A weight that holds a
    NaN or an infinity has no meaningful violation and is reported as NaN.

    Args:
        obj: a `keras.Variable`, a layer or model (or a wrapper holding one
            as `.module`, such as torch's `DistributedDataParallel`), or a
            (nested) list of these.

    Returns:
        A dict from each constrained variable's `path` to a Python float. Two
        variables with the same path get keys `path` and `path#2`.

    Example:

    >>> import keras, kconstraints
    >>> v = kconstraints.Variable([-0.5, 2.0], constraint=kconstraints.NonNeg(), project=False, name="scale")
    >>> kconstraints.violations(v)
    {'scale': 0.5}
    """
    out = {}
    for v in constrained_variables(obj):
        w = _value(v)
        if not all(w.shape):  # no entries, no violation
            worst = 0.0
        elif not bool(ops.convert_to_numpy(ops.all(ops.isfinite(w)))):
            worst = math.nan
        else:
            constraint = exact_of(v.constraint)
            residual = getattr(constraint, "residual", None)
            if callable(residual):  # a constraint that measures its own rows
                worst = float(ops.convert_to_numpy(residual(w)))
            else:
                projected = ops.convert_to_tensor(constraint(w))
                gap = ops.abs(upcast(w) - upcast(projected))
                worst = float(ops.convert_to_numpy(ops.amax(gap)))  # not ops.max: see _backend.py
        out[_unique(v.path, out)] = worst
    return out


def _config_attribute(layer, attribute):
    """The `*_constraint` attribute of `layer` that Keras builds its weight `attribute` from, or None.

    Keras names it after the weight: `kernel_constraint` for `kernel` (kept
    as `_kernel` by Dense), `recurrent_constraint` for `recurrent_kernel`,
    `depthwise_constraint` for `depthwise_kernel`, and for the `kernel` of
    `DepthwiseConv*D`. A layer's config holds these, so they are what a
    saved model keeps.
    """
    base = attribute.lstrip("_")
    names = [f"{base}_constraint"]
    if base.endswith("_kernel"):
        names.append(f"{base[: -len('_kernel')]}_constraint")
    if base == "kernel":
        names.append("depthwise_constraint")
    return next((name for name in names if hasattr(layer, name)), None)


def _layer_weights(layer):
    """`(attribute, variable, config attribute)` for each weight `layer` holds as an attribute."""
    for attribute, value in vars(layer).items():
        if isinstance(value, keras.Variable):
            name = _config_attribute(layer, attribute)
            if name is not None:
                yield attribute, value, name


def _check_layer_constraints(model):
    """Raise where a layer names a constraint its weight does not carry (set after build)."""
    # `_flatten_layers` is private, but every Keras 3 has it: every nested layer.
    for layer in model._flatten_layers(include_self=True):
        for _, variable, name in _layer_weights(layer):
            given = getattr(layer, name)
            if given is not None and variable.constraint is None:
                raise ValueError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) has `{name}`={given!r}, but "
                    f"its weight {variable.path!r} carries no constraint: Keras reads `{name}` "
                    "only when it builds the weight, so the optimizer would never apply it. "
                    "Use kconstraints.constrain(variable, constraint), which sets both."
                )


def _layer_owners(variable):
    """The layers that hold `variable` as an attribute, with that attribute's name.

    A Keras variable keeps no reference to its layer, so the layers are found
    among the objects that refer to the variable: a layer's instance dict
    (`gc.get_referrers`, some tens of milliseconds in a process with a backend
    loaded; `constrain` calls it once).
    """
    found = []
    for holder in gc.get_referrers(variable):
        if not (isinstance(holder, dict) and "_tracker" in holder):  # not a layer's __dict__
            continue
        for layer in gc.get_referrers(holder):
            if isinstance(layer, keras.layers.Layer) and getattr(layer, "__dict__", None) is holder:
                found += [(layer, key) for key, value in holder.items() if value is variable]
    return found


def _warn_if_frozen(variable, constraint):
    if not variable.trainable:
        warnings.warn(
            f"Variable {variable.path!r} is not trainable, so the optimizer never applies "
            f"its constraint {constraint!r}; call kconstraints.project() to apply it.",
            UserWarning,
            stacklevel=4,
        )


def constrain(variable, constraint, *, project=True):
    """Give an existing `keras.Variable` a constraint that the optimizer honours.

    `optimizer.apply` reads `variable.constraint` after each update, so
    setting that attribute is all Keras needs; this function checks its
    argument, resolves `constraint` like `kconstraints.get`, and by default
    projects the current value at once so the variable starts feasible (it
    calls the constraint on the value even with `project=False`, so that a
    wrong `axis` or shape raises here, not inside the first train step). It
    warns when the variable is not trainable: the optimizer never updates it,
    so only `kconstraints.project` would apply the constraint.

    A layer's weight also gets the constraint in the layer's own argument
    (`kernel_constraint` for a `Dense` kernel, `recurrent_constraint` for a
    recurrent kernel, ...), which is what the layer's config, and so a saved
    `.keras` model, keeps: the loaded model builds its weight with it and
    training resumes constrained. A custom layer's weight with no such
    argument gets the constraint for this session only, with a warning.
    Setting `layer.kernel_constraint` on a built layer does not reach its
    weight (Keras reads it once, when it builds the weight);
    `kconstraints.project`, `violations` and the callbacks raise on such a
    layer rather than leave it unconstrained.

    Args:
        variable: a `keras.Variable`.
        constraint: a constraint instance, a callable, a config dict, a
            class name or alias (`"non_neg"`), or `None` to remove it.
        project: project the current value now (default `True`).

    Returns:
        The variable itself.

    Example:

    >>> import keras, kconstraints
    >>> v = kconstraints.constrain(keras.Variable([-1.0, 3.0]), "non_neg")
    >>> keras.ops.convert_to_numpy(v.value).tolist()
    [0.0, 3.0]
    """
    check_variable("constrain", variable)
    return _attach(variable, get(constraint), project, _layer_owners(variable))


def _attach(variable, constraint, project, owners):
    """`constrain` for the `(layer, attribute)` pairs that hold `variable`."""
    if constraint is not None:
        # Called on the weight's value now even when it is not projected, so
        # that a wrong `axis` or shape fails here, not inside the first step.
        projected = constraint(_value(variable))
    variable.constraint = constraint
    kept = [_config_attribute(layer, attribute) for layer, attribute in owners]
    for (layer, _), name in zip(owners, kept, strict=True):
        if name is not None:  # what the layer's config, and so a saved model, keeps
            setattr(layer, name, constraint)
    if constraint is not None:
        if None in kept:
            layer, attribute = owners[kept.index(None)]
            warnings.warn(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no constraint argument for "
                f"its weight `{attribute}`, so a saved model will not keep {constraint!r} on "
                f"{variable.path!r}; give it to `add_weight(constraint=...)` in the layer's "
                "build, or call kconstraints.constrain again after loading.",
                UserWarning,
                stacklevel=3,
            )
        _warn_if_frozen(variable, constraint)
        if project:
            variable.assign(projected)
    return variable


# The arguments keras.Variable really takes; it accepts and drops any other.
_VARIABLE_ARGS = frozenset(inspect.signature(keras.Variable.__init__).parameters) - {
    "self",
    "kwargs",
}


def Variable(
    initializer, shape=None, dtype=None, trainable=True, *, constraint=None, project=True, **kwargs
):
    """`keras.Variable` with a `constraint=` argument that is kept, not dropped.

    `keras.Variable(value, constraint=c)` accepts the keyword and throws it
    away (it swallows every unknown keyword), so the optimizer never applies
    `c`. This function creates the variable with `keras.Variable` and then
    calls `constrain`. Any other keyword that `keras.Variable` would silently
    ignore (a misspelling, `regularizer=`) raises a `TypeError` here.

    Args:
        initializer, shape, dtype, trainable: as for `keras.Variable`.
        constraint: as for `constrain`.
        project: project the initial value at once (default `True`).
        **kwargs: the other arguments of `keras.Variable` (`name`,
            `autocast`, `aggregation`, `synchronization`, `layout`).

    Returns:
        A `keras.Variable` (this is a function, not a subclass).

    Example:

    >>> import kconstraints
    >>> v = kconstraints.Variable([-1.0, 3.0], constraint=kconstraints.NonNeg())
    >>> v.constraint
    NonNeg()
    """
    check_keywords(
        "kconstraints.Variable",
        "keras.Variable",
        kwargs,
        _VARIABLE_ARGS,
        note=" (and `constraint` here)",
    )
    variable = keras.Variable(initializer, shape=shape, dtype=dtype, trainable=trainable, **kwargs)
    return _attach(variable, get(constraint), project, owners=())  # no layer holds it yet
