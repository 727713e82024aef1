"""`EnforceConstraints`, `ConstraintMonitor` and `SparsitySchedule` inside `fit()` on every backend."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints.callbacks import ConstraintMonitor, EnforceConstraints, SparsitySchedule
from tests.backend import BACKEND, reset_compiler
from tests.helpers import to_np, tol
from tests.models import constrained, dense_model, fit, push_outside, small_model
from tests.references import sigma1, top_k_ref

FEASIBLE = tol("float32", 3.0)


def worst(model):
    return max(kc.violations(model).values())


def adam_with_ema():
    """Adam(0.05) keeping an exponential moving average of the weights."""
    return keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9)


def test_ema_leaves_fit_outside_the_set():
    # Keras updates the average before it projects, then writes the average
    # back at the end of fit(): the weights end outside their sets.
    model = small_model()
    fit(model, adam_with_ema())
    assert worst(model) > 1e-3


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
def test_enforce_constraints_projects_after_the_ema_overwrite(jit_compile):
    model = small_model()
    enforce = EnforceConstraints()
    fit(model, adam_with_ema(), [enforce], jit_compile=jit_compile)
    assert enforce.violation_at_end > 1e-3  # the overwrite came before on_train_end
    assert worst(model) <= FEASIBLE


def test_enforce_constraints_projects_before_the_first_step():
    keras.utils.set_random_seed(0)
    model, _ = dense_model()
    push_outside(model)
    start = worst(model)

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.seen = worst(self.model)

    enforce, spy = EnforceConstraints(), FirstStep()
    fit(model, callbacks=[enforce, spy], epochs=1)
    assert enforce.violation_at_begin == pytest.approx(start)
    assert spy.seen <= FEASIBLE
    assert enforce.violation_at_end <= FEASIBLE  # no EMA: the optimizer kept them feasible


def test_enforce_constraints_without_ema_changes_no_weight():
    keras.utils.set_random_seed(0)
    model, _ = dense_model()
    kc.project(model)
    keras.utils.set_random_seed(1)
    fit(model)
    plain = [to_np(v.value) for v in model.weights]

    keras.utils.set_random_seed(0)
    model, _ = dense_model()
    kc.project(model)
    keras.utils.set_random_seed(1)
    fit(model, callbacks=[EnforceConstraints()])
    for want, v in zip(plain, model.weights, strict=True):
        np.testing.assert_allclose(to_np(v.value), want, rtol=0, atol=FEASIBLE)


def frozen_infeasible_model():
    """A kernel made non-trainable: the optimizer never projects it."""
    keras.utils.set_random_seed(0)
    model, _ = dense_model()
    push_outside(model)
    kernel = model.layers[2].kernel
    kernel.trainable = False
    return model, kernel


@pytest.mark.parametrize("per_variable", [False, True])
def test_constraint_monitor_logs_the_worst_violation_each_epoch(per_variable):
    model, kernel = frozen_infeasible_model()
    gap = kc.violations(kernel)[kernel.path]
    monitor = ConstraintMonitor(per_variable=per_variable)
    history = fit(model, callbacks=[monitor], epochs=2).history
    assert history["constraint_violation"] == [pytest.approx(gap)] * 2
    per_path = {k: v for k, v in history.items() if k.startswith("constraint_violation/")}
    if per_variable:
        assert set(per_path) == {f"constraint_violation/{p}" for p in kc.violations(model)}
        assert per_path[f"constraint_violation/{kernel.path}"] == [pytest.approx(gap)] * 2
    else:
        assert per_path == {}


def test_constraint_monitor_is_shown_by_the_progress_bar(capsys):
    model, _ = frozen_infeasible_model()
    fit(model, callbacks=[ConstraintMonitor(name="worst")], epochs=1, verbose=2)
    assert "worst: " in capsys.readouterr().out


def test_monitor_reads_the_projected_weights_when_both_callbacks_run():
    model, _ = frozen_infeasible_model()
    history = fit(model, callbacks=[EnforceConstraints(), ConstraintMonitor()], epochs=1).history
    assert history["constraint_violation"] == [pytest.approx(0.0, abs=FEASIBLE)]


@pytest.mark.parametrize("name", ["", None, 3])
def test_constraint_monitor_rejects_a_bad_name(name):
    with pytest.raises(ValueError, match="ConstraintMonitor: `name`"):
        ConstraintMonitor(name=name)


# ------------------------- SpectralNorm(method="power"): exact at each epoch's end


def power_model():
    """Three Dense kernels under the power method with one step: a rough estimate."""
    keras.utils.set_random_seed(0)
    power = dict(kernel_constraint=kc.SpectralNorm(1.0, method="power", iterations=1))
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", **power),
            keras.layers.Dense(16, activation="relu", **power),
            keras.layers.Dense(1, **power),
        ]
    )


def largest_norm(model):
    return max(sigma1(to_np(v.value)) for v in constrained(model))


class NormAtEpochEnd(keras.callbacks.Callback):
    """The largest spectral norm of the model's kernels that the next callbacks see."""

    def __init__(self):
        super().__init__()
        self.norms = []

    def on_epoch_end(self, epoch, logs=None):
        self.norms.append(largest_norm(self.model))


@pytest.mark.parametrize(
    "jit_compile",
    [False, pytest.param(True, marks=pytest.mark.long_on("torch"))],
    ids=["eager", "jit"],
)
def test_enforce_constraints_makes_the_power_method_exact_after_every_epoch(jit_compile):
    model = power_model()
    push_outside(model)
    enforce, spy = EnforceConstraints(), NormAtEpochEnd()
    fit(model, callbacks=[enforce, spy], epochs=2, jit_compile=jit_compile)
    # The estimate left a kernel outside its ball, by a true excess, at every epoch's end ...
    assert len(enforce.violations_at_epoch_end) == 2
    assert min(enforce.violations_at_epoch_end) > 1e-4
    # ... and the exact projection put every kernel inside, for the next callbacks and after fit().
    assert max(spy.norms) <= 1 + 1e-5
    assert largest_norm(model) <= 1 + 1e-5
    assert worst(model) <= FEASIBLE


def test_without_each_epoch_the_estimate_is_left_until_the_end():
    model = power_model()
    push_outside(model)
    enforce, spy = EnforceConstraints(each_epoch=False), NormAtEpochEnd()
    fit(model, callbacks=[enforce, spy], epochs=1)
    assert enforce.violations_at_epoch_end == []
    assert spy.norms[0] > 1 + 1e-4
    assert enforce.violation_at_end > 1e-4
    assert largest_norm(model) <= 1 + 1e-5


@pytest.mark.parametrize("each_epoch", [1, "yes", None])
def test_enforce_constraints_rejects_a_bad_each_epoch(each_epoch):
    with pytest.raises(ValueError, match="EnforceConstraints: `each_epoch`"):
        EnforceConstraints(each_epoch=each_epoch)


# ------------------------------------------------------------ SparsitySchedule


def test_schedule_is_tfmot_polynomial_decay():
    s = SparsitySchedule(0.2, 0.8, begin_step=10, end_step=50, power=3, frequency=5)
    for step in (0, 10, 20, 35, 50, 70):
        p = min(max((step - 10) / 40, 0.0), 1.0)
        assert s.sparsity_at(step) == pytest.approx(0.8 + (0.2 - 0.8) * (1 - p) ** 3, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"final_sparsity": 1.0}, r"SparsitySchedule: `final_sparsity` must be < 1"),
        (
            {"initial_sparsity": -0.1},
            r"SparsitySchedule: `initial_sparsity` must be finite and in \[0, 1\]",
        ),
        (
            {"initial_sparsity": 0.6, "final_sparsity": 0.5},
            r"`initial_sparsity` must be <= `final_sparsity`",
        ),
        (
            {"begin_step": 5, "end_step": 5},
            r"SparsitySchedule: `end_step` must be an int >= 6, got 5",
        ),
        ({"frequency": 0}, r"SparsitySchedule: `frequency` must be an int >= 1, got 0"),
        ({"power": 0}, r"SparsitySchedule: `power` must be finite and in \(0"),
        ({"name": ""}, r"SparsitySchedule: `name` must be a non-empty string"),
    ],
)
def test_schedule_bad_arguments_fail_in_init(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsitySchedule(**kwargs)


class TraceCounting(keras.Sequential):
    """Counts the Python runs of `train_step`: one per trace under JAX jit and tf.function."""

    traces = 0

    def train_step(self, *args):
        TraceCounting.traces += 1
        return super().train_step(*args)


class TracesPerStep(keras.callbacks.Callback):
    """The trace count after each step."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append(TraceCounting.traces)


def run_schedule(jit_compile, model_class=TraceCounting):
    """3 epochs of 4 steps; the schedule changes k at steps 2, 4, 6 and 8."""
    keras.utils.set_random_seed(0)
    model = model_class(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", kernel_constraint=kc.TopK(density=1.0)),
            keras.layers.Dense(1, kernel_constraint=kc.NM(2, 4)),
        ]
    )
    schedule = SparsitySchedule(0.25, 0.75, begin_step=2, end_step=8, power=1, frequency=2)
    model.compile(keras.optimizers.SGD(0.01), "mse", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")
    spy = TracesPerStep()
    TraceCounting.traces = 0
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[schedule, spy])
    return model, schedule, history, spy.seen


def zeros(variable):
    return float(np.mean(to_np(variable.value) == 0))


def assert_pruned(model, schedule, history):
    # Sparsities 0.25, 0.4167, 0.5833, 0.75 keep 96, 75, 53, 32 of 128: four changes.
    assert schedule.changes == 4
    layer = model.layers[0]
    assert layer.kernel.constraint.density == pytest.approx(0.25)
    assert layer.kernel_constraint.get_config() == {"k": None, "density": 1.0, "axis": None}
    assert zeros(layer.kernel) == pytest.approx(0.75)
    w = to_np(layer.kernel.value)
    np.testing.assert_array_equal(w, top_k_ref(k=32)(w))
    # Measured at the end of each epoch (steps 0-3, 4-7, 8-11).
    assert history.history["sparsity"] == pytest.approx([0.25, 1 - 53 / 128, 0.75])


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="torch.compile replays a Python counter at every step: it can not count traces",
)
def test_schedule_prunes_and_recompiles_once_per_change():
    model, schedule, history, traces = run_schedule(jit_compile=True)
    assert_pruned(model, schedule, history)
    # Steps 0 and 1 run the first function (TensorFlow traces it twice, as
    # it creates the optimizer's variables); then one trace per change.
    assert traces[1] >= 1
    assert traces[-1] - traces[1] == schedule.changes


class FramesCompiled(keras.callbacks.Callback):
    """torch.compile's count of frames compiled, at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        from torch._dynamo.utils import counters

        self.seen.append(counters["frames"]["ok"])


@pytest.mark.long_on("torch")
@pytest.mark.skipif(
    BACKEND != "torch",
    reason="torch.compile's recompile limit; JAX and TensorFlow retrace once per change "
    "(test_schedule_prunes_and_recompiles_once_per_change)",
)
def test_the_guides_schedule_compiled_by_torch_never_reaches_the_recompile_limit():
    import torch

    # examples/pruning.py's schedule: over the middle third of the steps,
    # every sixth of it, 5 batches an epoch, the last one partial. Seven of
    # its updates change a count: with one graph per change, the first two
    # shapes and these would be 9 graphs of one frame, past the limit of 8.
    reset_compiler()
    epochs, steps = 9, 5 * 9
    begin, end = steps // 3, 2 * steps // 3
    schedule = SparsitySchedule(0.0, 0.9, begin, end, frequency=(end - begin) // 6)
    frames = FramesCompiled()
    model = dense_top_k(kc.TopK(density=1.0), layers=2)
    # Adam as in the guide (Keras's torch SGD breaks the graph on its own).
    model.compile(keras.optimizers.Adam(3e-3), "mse", jit_compile=True)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(36, 8)).astype("float32"), rng.normal(size=(36, 4)).astype("float32")
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        history = model.fit(
            x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[schedule, frames]
        )
    assert schedule.changes == 7
    # The first epoch compiles both frames of the step (before and after
    # Keras's `backward()`) for both batch sizes; the first change compiles
    # the one after once more, for the successor's type; the others are data.
    assert frames.seen[-1] - frames.seen[0] == 1
    assert history.history["sparsity"][-1] == pytest.approx(0.9, abs=1 / 64)
    for layer in model.layers:
        kernel = to_np(layer.kernel.value)
        k = kc.TopK(density=0.1).count(kernel.shape)
        assert np.count_nonzero(kernel) == k
        np.testing.assert_array_equal(kernel, top_k_ref(k=k)(kernel))


def test_schedule_in_an_eager_fit():
    model, schedule, history, _ = run_schedule(jit_compile=False)
    assert_pruned(model, schedule, history)


def test_schedule_needs_a_top_k_weight():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(1, kernel_constraint=kc.NM(1, 2))]
    )
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="SparsitySchedule: the model has no weight constrained"):
        model.fit(np.ones((4, 4)), np.ones((4, 1)), verbose=0, callbacks=[SparsitySchedule()])


def dense_top_k(constraint, layers=1):
    """Dense layers on 8 inputs (8 units each, the last 4), every kernel under `constraint`, seeded."""
    keras.utils.set_random_seed(0)
    units = [8] * (layers - 1) + [4]
    model = keras.Sequential(
        [keras.Input((8,))] + [keras.layers.Dense(n, kernel_constraint=constraint) for n in units]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def fit_steps(model, callbacks=(), epochs=1):
    """Fit 4 steps an epoch on fixed data, unshuffled, so that a resumed run sees the same batches."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    y = rng.normal(size=(32, model.output_shape[-1])).astype("float32")
    return model.fit(
        x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks)
    )


def test_schedule_leaves_a_top_k_shared_by_two_models_as_it_is():
    shared = kc.TopK(density=1.0)
    config = shared.get_config()
    pruned, dense = dense_top_k(shared, layers=2), dense_top_k(shared)
    fit_steps(pruned, [SparsitySchedule(0.0, 0.75, begin_step=0, end_step=2, frequency=1)])
    assert shared.get_config() == config
    first, second = (layer.kernel for layer in pruned.layers)
    # The two kernels that shared a TopK share its successor.
    assert first.constraint is second.constraint is not shared
    assert first.constraint.density == pytest.approx(0.25)
    assert zeros(first) == 0.75
    assert dense.layers[0].kernel.constraint is shared
    fit_steps(dense)
    assert zeros(dense.layers[0].kernel) == 0.0


class Interrupt(keras.callbacks.Callback):
    """Raises at the start of epoch `at`, as a preempted job would stop."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise RuntimeError("interrupted")


class ZerosPerStep(keras.callbacks.Callback):
    """The fraction of zeros of each kernel after every step (`self.model` syncs JAX's state)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([zeros(layer.kernel) for layer in self.model.layers])


def resume_schedule():
    # Updates at steps 1, 3, 5, 7 and from 9 on: the run resumes at step 4 or
    # 8, between two updates, where the restored weights are sparser than
    # the model's own TopK(density=1.0).
    return SparsitySchedule(0.25, 0.75, begin_step=1, end_step=9, power=1, frequency=2)


@pytest.mark.parametrize("at", [1, 2])
def test_schedule_resumed_by_backup_and_restore_prunes_as_an_uninterrupted_run(tmp_path, at):
    whole, steps = dense_top_k(kc.TopK(density=1.0), layers=2), ZerosPerStep()
    history = fit_steps(whole, [resume_schedule(), steps], epochs=3)

    backup = str(tmp_path / "backup")
    first = dense_top_k(kc.TopK(density=1.0), layers=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        callbacks = [resume_schedule(), keras.callbacks.BackupAndRestore(backup), Interrupt(at)]
        fit_steps(first, callbacks, epochs=3)
    # A new process: a new model and schedule, the schedule before the
    # callback that restores the optimizer's step.
    resumed = dense_top_k(kc.TopK(density=1.0), layers=2)
    schedule, resumed_steps = resume_schedule(), ZerosPerStep()
    callbacks = [schedule, keras.callbacks.BackupAndRestore(backup), resumed_steps]
    rest = fit_steps(resumed, callbacks, epochs=3)

    # From the first step resumed on: without the sparsity due re-applied
    # there, that step would run under the model's TopK(density=1.0).
    assert resumed_steps.seen == steps.seen[4 * at :]
    assert rest.history["sparsity"] == history.history["sparsity"][at:]
    assert schedule.sparsity == pytest.approx(0.75)
    for a, b in zip(whole.layers, resumed.layers, strict=True):
        assert b.kernel.constraint.get_config() == a.kernel.constraint.get_config()
        w, v = to_np(a.kernel.value), to_np(b.kernel.value)
        np.testing.assert_array_equal(v == 0, w == 0)
        np.testing.assert_allclose(v, w, rtol=1e-5, atol=1e-6)


def test_a_scheduled_model_saves_its_top_k_as_given_and_loads_in_safe_mode(tmp_path):
    model = dense_top_k(kc.TopK(density=1.0))
    fit_steps(model, [SparsitySchedule(0.0, 0.75, begin_step=0, end_step=2, frequency=1)])
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    kernel = loaded.layers[0].kernel
    # The layer's TopK as given (density 1.0); the weights as pruned (75% zeros).
    assert loaded.layers[0].kernel_constraint.get_config() == {
        "k": None,
        "density": 1.0,
        "axis": None,
    }
    np.testing.assert_array_equal(to_np(kernel.value), to_np(model.layers[0].kernel.value))
    assert zeros(kernel) == 0.75
    # The same schedule picks up at the restored step (past end_step): the final sparsity.
    schedule = SparsitySchedule(0.0, 0.75, begin_step=0, end_step=2, frequency=1)
    history = fit_steps(loaded, [schedule])
    assert kernel.constraint.density == pytest.approx(0.25)
    assert history.history["sparsity"] == [0.75]


@pytest.mark.parametrize("callback", [ConstraintMonitor, EnforceConstraints])
def test_a_wrong_axis_raises_before_the_first_step_changes_a_weight(callback):
    layer = keras.layers.Dense(3, kernel_constraint=kc.MaxNorm(2.0, axis=[0, 1, 2]))
    model = keras.Sequential([keras.Input((4,)), layer])
    model.compile("sgd", "mse")
    before = to_np(layer.kernel.value).copy()
    x = np.ones((8, 4), "float32")
    with pytest.raises(ValueError, match=r"`axis`=\[0, 1, 2\] is out of range .* \(4, 3\)"):
        model.fit(x, np.ones((8, 3), "float32"), verbose=0, callbacks=[callback()])
    np.testing.assert_array_equal(to_np(layer.kernel.value), before)
