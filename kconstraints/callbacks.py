"""Keras callbacks that keep constraints holding for all of `fit()`, and report on them.

Where the callback hooks fall in `fit()`, on JAX, TensorFlow and torch
alike: `on_train_begin` runs before the first step, and `on_train_end` runs
*after* `optimizer.finalize_variable_values()`, the call that overwrites the
weights with their moving average when the optimizer has `use_ema=True`. So
a projection made in `on_train_end` is the last word on the weights (the
Keras version this was verified on is in `_backend.py`;
`tests/test_callbacks.py` checks the order on every backend).
"""

from __future__ import annotations

import math
import warnings

import keras

from kconstraints._checks import check_bool, check_text
from kconstraints.variables import project, violations


def _worst(found):
    """The largest violation; NaN if any weight holds a NaN or an infinity."""
    if any(math.isnan(v) for v in found.values()):
        return math.nan
    return max(found.values(), default=0.0)


class EnforceConstraints(keras.callbacks.Callback):
    """Project every constrained weight at the start and at the end of `fit()`.

    The optimizer projects a weight only after each of its updates, which
    leaves two gaps this callback closes:

    - the start: initial, `set_weights()` or loaded weights are never
      projected, and under `mixed_float16` the first steps can be skipped
      by the loss scaler (non-finite gradients), so infeasible weights
      survive them;
    - the end: with `use_ema=True`, `fit()` finishes by overwriting the
      weights with their moving average, an average of *unprojected* weights
      (Keras updates the average before it applies the constraints), which
      lies outside the set even for a convex one.

    Non-trainable variables with a constraint are projected too.

    Attributes:
        violation_at_begin: the worst `max |w - P(w)|` found just before the
            projection at the start of the last `fit()`.
        violation_at_end: the same, just before the projection at its end
            (after the EMA overwrite, if any).

    Example:

    >>> import keras, numpy as np, kconstraints
    >>> from kconstraints.callbacks import EnforceConstraints
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_constraint=kconstraints.NonNeg())])
    >>> model.compile(keras.optimizers.SGD(0.1, use_ema=True), "mse")
    >>> x, y = np.ones((8, 3), "float32"), -np.ones((8, 1), "float32")
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[EnforceConstraints()])
    >>> list(kconstraints.violations(model).values())
    [0.0]
    """

    def __init__(self):
        super().__init__()
        self.violation_at_begin = None
        self.violation_at_end = None

    def _enforce(self):
        worst = _worst(violations(self.model))
        project(self.model)
        return worst

    def on_train_begin(self, logs=None):
        self.violation_at_begin = self._enforce()

    def on_train_end(self, logs=None):
        self.violation_at_end = self._enforce()


class ConstraintMonitor(keras.callbacks.Callback):
    """Add the worst constraint violation to the logs at the end of each epoch.

    The value `max |w - P(w)|` over every constrained weight of the model is
    written under `name` in the epoch logs, so the progress bar shows it and
    `History` keeps it. After a step the optimizer has projected each
    trainable weight, so a non-zero value points at a gap: an EMA overwrite
    (`ema_overwrite_frequency`), a non-trainable constrained variable, a
    constraint that is not a projection, or a weight written by other code.
    A weight that holds a NaN or an infinity makes the value NaN.

    Args:
        name: the key in the logs (default `"constraint_violation"`).
        per_variable: also log each variable's violation under
            `"{name}/{variable.path}"`.
        stop_on_nonfinite: stop training at the end of an epoch that left a
            constrained weight holding a NaN or an infinity, with a warning
            naming the variables; they are kept in `nonfinite`.

    Example:

    >>> import keras, numpy as np, kconstraints
    >>> from kconstraints.callbacks import ConstraintMonitor
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_constraint=kconstraints.NonNeg())])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0, callbacks=[ConstraintMonitor()])
    >>> history.history["constraint_violation"]
    [0.0]
    """

    def __init__(self, name="constraint_violation", per_variable=False, stop_on_nonfinite=False):
        super().__init__()
        owner = type(self).__name__
        self.name = check_text(owner, "name", name)
        self.per_variable = check_bool(owner, "per_variable", per_variable)
        self.stop_on_nonfinite = check_bool(owner, "stop_on_nonfinite", stop_on_nonfinite)
        self.nonfinite = []

    def on_epoch_end(self, epoch, logs=None):
        found = violations(self.model)
        self.nonfinite = [path for path, value in found.items() if math.isnan(value)]
        if self.stop_on_nonfinite and self.nonfinite:
            self.model.stop_training = True
            warnings.warn(
                f"ConstraintMonitor: stopping after epoch {epoch + 1}: the weights "
                f"{self.nonfinite} hold a NaN or an infinity.",
                RuntimeWarning,
                stacklevel=2,
            )
        if logs is None:
            return
        logs[self.name] = _worst(found)
        if self.per_variable:
            logs.update({f"{self.name}/{path}": value for path, value in found.items()})
