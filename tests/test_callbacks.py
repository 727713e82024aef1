"""`EnforceConstraints` and `ConstraintMonitor` inside `fit()` on every backend."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints.callbacks import ConstraintMonitor, EnforceConstraints
from tests.helpers import to_np, tol
from tests.models import constrained, dense_model, fit, push_outside, small_model
from tests.references import sigma1

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


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
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
