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

from kconstraints._checks import check_bool, check_int, check_number, check_ordered, check_text
from kconstraints.sparse import TopK
from kconstraints.variables import constrained_variables, project, violations


def _worst(found):
    """The largest violation; NaN if any weight holds a NaN or an infinity."""
    if any(math.isnan(v) for v in found.values()):
        return math.nan
    return max(found.values(), default=0.0)


class EnforceConstraints(keras.callbacks.Callback):
    """Project every constrained weight exactly at the start, at each epoch's end and at the end of `fit()`.

    Each projection is `kconstraints.project(model)`: every constraint by its
    exact method (`Constraint.exact`). The optimizer projects a weight only
    after each of its updates, and only as well as its constraint's per-step
    method, which leaves three gaps this callback closes:

    - the start: initial, `set_weights()` or loaded weights are never
      projected, and under `mixed_float16` the first steps can be skipped
      by the loss scaler (non-finite gradients), so infeasible weights
      survive them;
    - the end: with `use_ema=True`, `fit()` finishes by overwriting the
      weights with their moving average, an average of *unprojected* weights
      (Keras updates the average before it applies the constraints), which
      lies outside the set even for a convex one;
    - estimates: a per-step method that estimates, such as
      `SpectralNorm(method="power")`, may leave a weight slightly outside;
      after each epoch (with `each_epoch`) and at the end the weight is
      exactly inside.

    Non-trainable variables with a constraint are projected too.

    Args:
        each_epoch: also project at the end of every epoch (default `True`),
            before the other callbacks that come after this one in the list
            see the weights.

    Attributes:
        violation_at_begin: the worst `max |w - P(w)|` (the true one, by the
            exact method) found just before the projection at the start of
            the last `fit()`.
        violations_at_epoch_end: the same just before each epoch's
            projection, one per epoch (empty without `each_epoch`).
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

    def __init__(self, each_epoch=True):
        super().__init__()
        self.each_epoch = check_bool(type(self).__name__, "each_epoch", each_epoch)
        self.violation_at_begin = None
        self.violations_at_epoch_end = []
        self.violation_at_end = None

    def _enforce(self):
        worst = _worst(violations(self.model))
        project(self.model)
        return worst

    def on_train_begin(self, logs=None):
        self.violations_at_epoch_end = []
        self.violation_at_begin = self._enforce()

    def on_epoch_end(self, epoch, logs=None):
        if self.each_epoch:
            self.violations_at_epoch_end.append(self._enforce())

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


class SparsitySchedule(keras.callbacks.Callback):
    """Raise the sparsity of every `TopK`-constrained weight over training, on a polynomial schedule.

    Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to
    prune"; the schedule of TensorFlow Model Optimization's
    `PolynomialDecay`): at step `t` the target sparsity is
    `final + (initial - final) * (1 - p) ** power`, with
    `p = (t - begin_step) / (end_step - begin_step)` clipped to [0, 1]. It
    is applied at `begin_step`, every `frequency` steps after it, and from
    `end_step` on. Each weight whose constraint is a `TopK` then keeps
    `density = 1 - sparsity` of its entries: the callback sets the
    constraint's `density` (and `k=None`) and projects those weights at once.

    Steps are counted from `optimizer.iterations` at the start of `fit()`.
    A `TopK`'s `k` is a shape of the compiled train step, so a change
    rebuilds the train function (`model.make_train_function(force=True)`):
    exactly one recompilation per change, and a change is made only when
    the number of entries kept changes for some weight. A constraint that
    holds the sparsity in a variable would avoid recompiling, but top-k needs
    a static `k`, and a rank-based mask of a variable `k` costs a full sort
    per step; a schedule changes a few dozen times in a run, at most.

    Args:
        initial_sparsity: the sparsity at `begin_step`, in [0, 1).
        final_sparsity: the sparsity from `end_step` on, in [initial, 1).
        begin_step: the first step pruned (an int >= 0).
        end_step: the step the final sparsity is reached (> `begin_step`).
        power: the exponent of the polynomial (> 0; 3 prunes fast early).
        frequency: the steps between two updates (an int >= 1).
        name: the key of the measured sparsity (the fraction of zero entries
            of the `TopK` weights) in the epoch logs.

    Example:

    >>> import keras, numpy as np, kconstraints
    >>> from kconstraints.callbacks import SparsitySchedule
    >>> layer = keras.layers.Dense(4, kernel_constraint=kconstraints.TopK(density=1.0))
    >>> model = keras.Sequential([keras.Input((8,)), layer])
    >>> model.compile("sgd", "mse")
    >>> schedule = SparsitySchedule(0.0, 0.75, begin_step=0, end_step=4, frequency=2)
    >>> x, y = np.ones((16, 8)), np.ones((16, 4))
    >>> history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[schedule])
    >>> history.history["sparsity"], layer.kernel_constraint.density
    ([0.65625, 0.75], 0.25)
    """

    def __init__(
        self,
        initial_sparsity=0.0,
        final_sparsity=0.5,
        begin_step=0,
        end_step=1000,
        power=3.0,
        frequency=100,
        name="sparsity",
    ):
        super().__init__()
        owner = type(self).__name__
        self.initial_sparsity = check_number(
            owner, "initial_sparsity", initial_sparsity, low=0, high=1
        )
        self.final_sparsity = check_number(owner, "final_sparsity", final_sparsity, low=0, high=1)
        for arg in ("initial_sparsity", "final_sparsity"):
            if getattr(self, arg) == 1:
                raise ValueError(f"{owner}: `{arg}` must be < 1 (TopK keeps at least one entry).")
        check_ordered(
            owner, "initial_sparsity", self.initial_sparsity, "final_sparsity", self.final_sparsity
        )
        self.begin_step = check_int(owner, "begin_step", begin_step, low=0)
        self.end_step = check_int(owner, "end_step", end_step, low=self.begin_step + 1)
        self.power = check_number(owner, "power", power, low=0, low_open=True)
        self.frequency = check_int(owner, "frequency", frequency, low=1)
        self.name = check_text(owner, "name", name)
        #: The target sparsity last applied (None before `begin_step`).
        self.sparsity = None
        #: How many times the schedule changed a `TopK` (and rebuilt the train function).
        self.changes = 0
        self._step = 0
        self._begin = 0
        self._pruned = []

    def sparsity_at(self, step):
        """The scheduled target sparsity at `step`."""
        span = self.end_step - self.begin_step
        progress = min(max((step - self.begin_step) / span, 0.0), 1.0)
        drop = (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power
        return self.final_sparsity + drop

    def on_train_begin(self, logs=None):
        self._pruned = [
            (v, v.constraint)
            for v in constrained_variables(self.model)
            if isinstance(v.constraint, TopK)
        ]
        if not self._pruned:
            raise ValueError(
                f"{type(self).__name__}: the model has no weight constrained by `TopK`; "
                "there is nothing to prune."
            )
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch
        step = self._step
        if step < self.begin_step:
            return
        if (step - self.begin_step) % self.frequency and step < self.end_step:
            return
        self._apply(self.sparsity_at(step))

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1 a call covers the steps `_begin` to `batch`.
        self._step += batch - self._begin + 1

    def _apply(self, sparsity):
        changed = []
        for constraint in {id(c): c for _, c in self._pruned}.values():
            shapes = [tuple(v.shape) for v, c in self._pruned if c is constraint]
            before = [constraint.count(shape) for shape in shapes]
            old = (constraint.k, constraint.density)
            constraint.k, constraint.density = None, 1.0 - sparsity
            if [constraint.count(shape) for shape in shapes] == before:
                constraint.k, constraint.density = old  # the same weights: keep the trace
            else:
                changed.append(constraint)
        self.sparsity = sparsity
        if not changed:
            return
        # The model, not its variables: on JAX this syncs the trainer's state
        # first, so the projection is not lost (see `variables.project`).
        project(
            [
                v
                for v in constrained_variables(self.model)
                if any(v.constraint is c for c in changed)
            ]
        )
        self.model.make_train_function(force=True)
        self.changes += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        zeros = size = 0
        for v, _ in self._pruned:
            values = keras.ops.convert_to_numpy(v.value)
            zeros += int((values == 0).sum())
            size += values.size
        logs[self.name] = zeros / max(size, 1)
