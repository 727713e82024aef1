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
from keras import ops

from kconstraints._backend import schedule_as_data, sync_training_state, torch_compiling
from kconstraints._checks import (
    check_bool,
    check_int,
    check_number,
    check_ordered,
    check_sparsity,
    check_text,
    resolve_axis,
)
from kconstraints._constants import FLOAT64_PRODUCT_SLACK
from kconstraints._tensors import clamp, slices_as_rows, upcast
from kconstraints.sparse import TopK
from kconstraints.variables import constrained_variables, project, violations

__all__ = ["ConstraintMonitor", "EnforceConstraints", "SparsitySchedule"]


def _worst(found):
    """The largest violation; NaN if any weight holds a NaN or an infinity."""
    if any(math.isnan(v) for v in found.values()):
        return math.nan
    return max(found.values(), default=0.0)


class EnforceConstraints(keras.callbacks.Callback):
    """Project every constrained weight exactly at the start, at each epoch's end and at the end of `fit()`.

    Each projection is `kconstraints.project(model)`: every constraint by its
    exact method (`Constraint.exact`), non-trainable variables included. The
    optimizer projects a weight only after each of its updates, and only as
    well as its constraint's per-step method, which leaves three gaps that
    this callback closes (detail: docs/outside-the-optimizer-step.md): the
    start (initial, set or loaded weights, and the first steps a
    `mixed_float16` loss scaler skips), the end (the moving average of
    *unprojected* weights that `use_ema=True` writes over the weights) and
    estimates (a per-step method such as `SpectralNorm(method="power")`).

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
    A weight that holds a NaN or an infinity makes the value NaN. Every
    constraint is also called once when training begins, so that a wrong
    `axis` or shape raises before the first step changes a weight.

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

    def on_train_begin(self, logs=None):
        # Every constraint called once on its weight before the first step: a
        # wrong `axis` or shape raises here, not after the first update (see
        # docs/outside-the-optimizer-step.md).
        violations(self.model)

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


def _keep_largest_counted(rows, density):
    """`rows` with all but the `k` largest magnitudes of each row set to 0, `k` read from a tensor.

    `k` is `TopK`'s count for `density` (a float64 0-d tensor), computed in
    the graph with the float64 arithmetic of `TopK.count`, so it is the
    same number. The `k`-th largest magnitude is read from a sort, at index
    `n - k`, where `top_k` would need `k` static; ties at it keep the lower
    index, as `TopK` does.
    """
    n = rows.shape[-1]
    # The cast truncates, which is the floor of a positive number (`ops.floor` of a
    # float64 tensor goes through Keras's dtype promotion, which Dynamo warns about).
    k = clamp(ops.cast(density * n + 0.5 + FLOAT64_PRODUCT_SLACK, "int32"), 1, n)
    magnitude = ops.abs(rows)
    at = ops.broadcast_to(ops.reshape(n - k, (1, 1)), (rows.shape[0], 1))
    t = ops.take_along_axis(ops.sort(magnitude, axis=-1), at, axis=-1)
    above = magnitude > t
    tied = magnitude == t
    room = k - ops.sum(ops.cast(above, "int32"), axis=-1, keepdims=True)
    tie_rank = ops.cumsum(ops.cast(tied, "int32"), axis=-1)
    keep = ops.logical_or(above, ops.logical_and(tied, tie_rank <= room))
    return ops.where(keep, rows, ops.zeros_like(rows))


class _ScheduledTopK(TopK):
    """The `TopK` a schedule gives a weight where its density must be data (`schedule_as_data`).

    Its config is the `TopK`'s, and eagerly it projects as that `TopK`; inside
    a compiled step it reads its density from `scheduled`, a float64
    variable that the schedule owns and shares between all the successors
    of one `TopK`, so a change of the density is not a change of the graph.
    """

    @property
    def _owner(self):
        return "TopK"

    def project(self, w):
        if not torch_compiling():
            return super().project(w)
        x = upcast(w)
        rows, restore = slices_as_rows(x, resolve_axis(self._owner, "axis", self.axis, x.shape))
        return restore(_keep_largest_counted(rows, self.scheduled.value))


class SparsitySchedule(keras.callbacks.Callback):
    """Raise the sparsity of every `TopK`-constrained weight over training, on a polynomial schedule.

    Gradual magnitude pruning (Zhu & Gupta 2017; tfmot's `PolynomialDecay`):
    at step `t` the target is `final + (initial - final) * (1 - p) ** power`,
    `p = (t - begin_step) / (end_step - begin_step)` clipped to [0, 1],
    applied at `begin_step`, every `frequency` steps after it, and from
    `end_step` on. Each `TopK` weight then gets, as its variable's
    `constraint`, a new `TopK` of `density = 1 - sparsity` (the old config,
    `k=None`), and is projected at once. The `TopK` given to the layer never
    changes: shared by two models it prunes only where a schedule runs, and
    the layer's config (what `model.save` writes) keeps it. The step is
    `optimizer.iterations`, read at the first batch of each `fit()`, which
    applies the sparsity due then: a run resumed by `BackupAndRestore` prunes
    as an uninterrupted one. On JAX and TensorFlow `k` is a static shape of
    the compiled step: a change of a weight's count rebuilds the train
    function once; on torch the count is read from a variable, so that
    torch.compile does not compile a graph per change (docs/guides/pruning.md).

    Args:
        initial_sparsity: the sparsity at `begin_step`, in [0, 1).
        final_sparsity: the sparsity from `end_step` on, in [initial, 1).
        begin_step: the first step pruned (an int >= 0).
        end_step: the step the final sparsity is reached (> `begin_step`).
        power: the exponent of the polynomial (> 0; 3 prunes fast early).
        frequency: the steps between two updates (an int >= 1).
        name: the epoch logs' key of the `TopK` weights' measured fraction of zeros.

    Example:

    >>> import keras, numpy as np, kconstraints
    >>> from kconstraints.callbacks import SparsitySchedule
    >>> layer = keras.layers.Dense(4, kernel_constraint=kconstraints.TopK(density=1.0))
    >>> model = keras.Sequential([keras.Input((8,)), layer])
    >>> model.compile("sgd", "mse")
    >>> schedule = SparsitySchedule(0.0, 0.75, begin_step=0, end_step=4, frequency=2)
    >>> x, y = np.ones((16, 8)), np.ones((16, 4))
    >>> history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[schedule])
    >>> history.history["sparsity"], layer.kernel.constraint.density, layer.kernel_constraint.density
    ([0.65625, 0.75], 0.25, 1.0)
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
        self.initial_sparsity = check_sparsity(owner, "initial_sparsity", initial_sparsity)
        self.final_sparsity = check_sparsity(owner, "final_sparsity", final_sparsity)
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
        #: How many times the schedule changed a `TopK` count (on JAX and TF each retraces the step).
        self.changes = 0
        self._step = None
        self._begin = 0
        self._groups = []

    def sparsity_at(self, step):
        """The scheduled target sparsity at `step`."""
        span = self.end_step - self.begin_step
        progress = min(max((step - self.begin_step) / span, 0.0), 1.0)
        drop = (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power
        return self.final_sparsity + drop

    def _last_update(self, step):
        """The last step at or before `step` where the schedule updates; None before `begin_step`."""
        if step < self.begin_step:
            return None
        if step >= self.end_step:
            return step
        return step - (step - self.begin_step) % self.frequency

    def on_train_begin(self, logs=None):
        # One group per constraint object: the weights that share a `TopK` share its successors.
        groups = {}
        for v in constrained_variables(self.model):
            if isinstance(v.constraint, TopK):
                groups.setdefault(id(v.constraint), [v.constraint, []])[1].append(v)
        if not groups:
            raise ValueError(
                f"{type(self).__name__}: the model has no weight constrained by `TopK`; "
                "there is nothing to prune."
            )
        self._groups = list(groups.values())
        # Read at the first batch: a `BackupAndRestore` later in the list
        # restores the optimizer's `iterations` in its own `on_train_begin`.
        self._step = None

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = batch
        first = self._step is None
        if first:
            self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        due = self._last_update(self._step)
        # The first batch applies the sparsity due now, even between two
        # updates: the variables may hold a constraint older than the weights.
        if due is not None and (first or due == self._step):
            self._apply(self.sparsity_at(due))

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1 a call covers the steps `_begin` to `batch`.
        self._step += batch - self._begin + 1

    def _apply(self, sparsity):
        self.sparsity = sparsity
        changed = []
        rebuild = False
        for group in self._groups:
            current, variables = group
            config = dict(current.get_config(), k=None, density=1.0 - sparsity)
            successor = type(current).from_config(config)
            counts = [current.count(tuple(v.shape)) for v in variables]
            if [successor.count(tuple(v.shape)) for v in variables] == counts:
                continue  # the same weights: keep the trace
            if schedule_as_data():
                successor = self._scheduled(current, config)
            group[0] = successor
            rebuild |= not isinstance(current, _ScheduledTopK)
            for v in variables:
                v.constraint = successor
            changed.extend(variables)
        if not changed:
            return
        # Synced through the model, not through its variables: on JAX the
        # trainer holds the live weights, and the projection must start from
        # them and be read back before the next step (see `variables.project`).
        sync_training_state(self.model)
        project(changed)
        if rebuild:
            self.model.make_train_function(force=True)
        self.changes += 1

    @staticmethod
    def _scheduled(current, config):
        """The successor of `current` reading its density from a variable, `current`'s if it has one."""
        successor = _ScheduledTopK.from_config(config)
        scheduled = getattr(current, "scheduled", None)
        if scheduled is None:
            scheduled = keras.Variable(
                successor.density, dtype="float64", trainable=False, name="scheduled_density"
            )
        else:
            scheduled.assign(successor.density)
        successor.scheduled = scheduled
        return successor

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        zeros = size = 0
        for _, variables in self._groups:
            for v in variables:
                values = keras.ops.convert_to_numpy(v.value)
                zeros += int((values == 0).sum())
                size += values.size
        logs[self.name] = zeros / max(size, 1)
