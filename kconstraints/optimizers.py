"""Adaptive optimizers on constrained weights: the gradient mapping in place of the gradient.

Keras applies `variable.constraint` after each optimizer update, so a
constrained weight moves by `x <- P(x - lr * D m)`, where `m` is the
optimizer's moment of the gradients and `D` its per-coordinate scaling
(Adam, RMSprop, Adagrad, ...; `D = 1` for SGD). A fixed point of that map
satisfies `-D g in N_C(x)` (the normal cone of the set C at x), which is the
optimality condition `-g in N_C(x)` only when `D` is a multiple of the
identity. An adaptive optimizer can stop away from the constrained optimum,
whatever its learning rate (AdaGrad, Duchi, Hazan & Singer 2011, projects in
its preconditioner's norm for this reason). `projected(optimizer)` gives it,
for each constrained variable, the gradient mapping
`G(x) = (x - P(x - eta g)) / eta` (Nesterov 2004, "Introductory Lectures on
Convex Optimization", sec. 2.2.3) instead of `g`; the measurements and the
argument are in the guide `docs/guides/projected-adam.md`.
"""

from __future__ import annotations

import inspect

import keras
from keras import ops

from kconstraints._checks import check_number

__all__ = ["GradientMapping", "projected"]

#: Keras optimizers that wrap others: project the inner optimizer instead.
_WRAPPERS = (
    keras.optimizers.Optimizer,
    keras.optimizers.LossScaleOptimizer,
    keras.optimizers.MultiOptimizer,
)


class GradientMapping:
    """The mixin of every projected optimizer: `apply` maps each constrained gradient first.

    For a variable `x` with a `constraint` P and gradient `g`, the optimizer
    receives `G = (x - P(x - eta g)) / eta`; other variables keep `g`. `G` is
    zero exactly at a constrained stationary point (where
    `P(x - eta g) = x`), so there the moments vanish and `x` stays; and every
    fixed point of "step on G, then project" is stationary, for any
    `eta > 0`: with `y = x - eta G` in C, the normal-cone inequality gives
    `eta G^T D G <= 0`, so `G = 0`. For a linear subspace (`Symmetric`,
    `Skew`, `Hyperplane`) `G` is the projected gradient, whatever `eta`. Cost:
    one more constraint call per constrained variable and step, and one per
    constrained variable when the optimizer is built, which projects the
    initial weights so that the first step maps from a point of the set.

    Built by `projected`; a class of one's own is `class P(GradientMapping, MyOptimizer)`.

    Args:
        eta: the step inside the mapping (> 0), or None (default) for the
            optimizer's current learning rate (1 while that is 0).
    """

    def __init__(self, *args, eta=None, **kwargs):
        if eta is not None:
            eta = check_number(type(self).__name__, "eta", eta, low=0, low_open=True)
        super().__init__(*args, **kwargs)
        self.eta = eta

    def get_config(self):
        return {**super().get_config(), "eta": self.eta}

    def build(self, var_list):
        # A weight as initialized is not in its set yet: its distance to it,
        # divided by eta, would enter the first G and inflate the moments for
        # hundreds of steps. Keras projects after the first step anyway.
        super().build(var_list)
        for variable in var_list:
            if variable.constraint is not None and variable.trainable:
                variable.assign(variable.constraint(variable))

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is not None:
            variables = list(trainable_variables)
        elif self.built:  # JAX's `stateless_apply` passes grads alone
            variables = self._trainable_variables
        else:
            variables = None
        if variables is None or len(variables) != len(grads):  # Keras's own error
            return super().apply(grads, trainable_variables)
        grads = [self._mapping(g, v) for g, v in zip(grads, variables, strict=True)]
        return super().apply(grads, trainable_variables)

    def _mapping(self, grad, variable):
        """`(x - P(x - eta g)) / eta` for a constrained variable; `grad` itself otherwise."""
        if grad is None or variable.constraint is None:
            return grad
        if getattr(variable, "overwrite_with_gradient", False):  # float8 scales, not a step
            return grad
        x = ops.convert_to_tensor(variable)  # in a StatelessScope, the mapped value
        g = ops.cast(grad, x.dtype)
        scale = self.loss_scale_factor  # `apply` unscales after this call
        if scale is not None:
            g = g / scale
        if self.eta is None:
            # Any eta > 0 has the same fixed points: a rate scheduled to 0 uses 1.
            rate = ops.cast(self.learning_rate, x.dtype)
            eta = ops.where(rate > 0, rate, ops.ones_like(rate))
        else:
            eta = ops.cast(self.eta, x.dtype)
        mapped = (x - variable.constraint(x - eta * g)) / eta
        if scale is not None:
            mapped = mapped * scale
        return ops.cast(mapped, grad.dtype)


_CLASSES = {}


def _projected_class(base):
    """`Projected<Base>(GradientMapping, base)`, made once and registered for safe-mode loading."""
    if base not in _CLASSES:
        name = f"Projected{base.__name__}"
        doc = f"`{base.__name__}` fed the gradient mapping of constrained variables."
        cls = type(name, (GradientMapping, base), {"__module__": __name__, "__doc__": doc})
        _CLASSES[base] = keras.saving.register_keras_serializable("kconstraints", name)(cls)
    return _CLASSES[base]


def _public_class(optimizer):
    """The optimizer's class, above Keras's backend twins.

    On torch, `keras.optimizers.Adam(...)` is a `keras.src.backend.torch`
    subclass (a faster update for the same rule);
    the projected class derives from the public one, which the registered
    name and a fresh process's import both know.
    """
    for cls in type(optimizer).__mro__:
        if not cls.__module__.startswith("keras.src.backend."):
            return cls
    return type(optimizer)  # pragma: no cover - every optimizer has a public base


def projected(optimizer, eta=None):
    """A copy of `optimizer` that steps on the gradient mapping of each constrained variable.

    Returns a new, unbuilt optimizer of class `Projected<Name>` (a subclass
    of the optimizer's class and of `GradientMapping`) with the same config
    and learning rate (schedules included), for Adam, AdamW, Nadam, RMSprop,
    Adagrad, Lion, SGD and any other Keras 3 optimizer; for SGD with a
    linear-subspace constraint it changes nothing. The classes of Keras's
    optimizers are registered when this module is imported, so a compiled
    model loads in safe mode; one of an optimizer class of your own is
    registered by calling `projected` on it before loading.

    Args:
        optimizer: an unbuilt `keras.optimizers.Optimizer` (for mixed
            precision, the inner one: `LossScaleOptimizer(projected(opt))`).
        eta: the step inside the mapping (> 0), or None for the optimizer's
            current learning rate.

    Example:

    >>> import keras, kconstraints
    >>> from kconstraints.optimizers import projected
    >>> g = keras.ops.convert_to_tensor([[1.0, -1.0], [0.0, 1.0]])
    >>> for opt in (keras.optimizers.Adam(0.1), projected(keras.optimizers.Adam(0.1))):
    ...     w = kconstraints.Variable(keras.ops.zeros((2, 2)), constraint=kconstraints.Symmetric())
    ...     opt.apply([g], [w])
    ...     print(type(opt).__name__, keras.ops.convert_to_numpy(w).astype(float).round(3).tolist())
    Adam [[-0.1, 0.05], [0.05, -0.1]]
    ProjectedAdam [[-0.1, 0.1], [0.1, -0.1]]
    """
    owner = "projected"
    if not isinstance(optimizer, keras.optimizers.Optimizer) or type(optimizer) in _WRAPPERS:
        raise TypeError(
            f"{owner}: `optimizer` must be a keras.optimizers.Optimizer such as Adam "
            f"(for LossScaleOptimizer, the inner one), got {optimizer!r}."
        )
    if optimizer.built:
        raise ValueError(
            f"{owner}: `optimizer` must not be built yet (its state would not be "
            f"copied), got {optimizer.name!r}, built on {len(optimizer.variables)} variables."
        )
    if eta is not None:
        eta = check_number(owner, "eta", eta, low=0, low_open=True)
    base = _public_class(optimizer)
    if isinstance(optimizer, GradientMapping):
        base = next(c for c in base.__mro__[1:] if not issubclass(c, GradientMapping))
    config = optimizer.get_config()
    config.pop("eta", None)
    rate = optimizer._learning_rate
    if not isinstance(rate, keras.Variable):  # a schedule or a callable: the same object
        config["learning_rate"] = rate
    return _projected_class(base)(**config, eta=eta)


for _cls in vars(keras.optimizers).values():
    if inspect.isclass(_cls) and issubclass(_cls, keras.optimizers.Optimizer):
        if _cls not in _WRAPPERS:
            _projected_class(_cls)
