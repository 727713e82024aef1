"""Constraints under mixed precision, half-precision variables, loss scaling and gradient accumulation."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from kconstraints.callbacks import EnforceConstraints
from tests.helpers import dtype_of, to_np
from tests.models import assert_feasible, fit, half_model

POLICIES = ["mixed_float16", "mixed_bfloat16", "float16", "bfloat16"]


@pytest.fixture
def policy(request):
    """Set the global dtype policy for the model built in the test, and restore it."""
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy("float32")


def all_weights(model):
    return [to_np(v.value) for v in model.weights]


class SameCondNames(keras.callbacks.Callback):
    """Keep Keras's name counter of `ops.cond` the same at the start of every batch.

    On torch, `LossScaleOptimizer.apply` calls `keras.ops.cond` twice a step
    (finite gradients? then: grow the scale?), and each call builds a
    `keras.ops.Cond` operation that takes a unique name from a global counter
    (`keras.src.utils.naming.uniquify`). torch.compile runs those calls after
    the train step's graph breaks and guards on the counter's value, so every
    step recompiled them and the 8th hit dynamo's recompile limit (Keras
    3.15.1, torch 2.13.0: Keras's own code, not the constraints). The names
    of these eager operations are never read; restarting their counter each
    batch lets one compiled variant serve every step. It touches only the
    `cond` entry of Keras's private naming state, and no Keras code.
    """

    def on_train_batch_begin(self, batch, logs=None):
        from keras.src.backend.common import global_state

        names = global_state.get_global_attribute("object_name_uids")
        if names is not None:
            names.pop("cond", None)


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
@pytest.mark.parametrize(
    ("optimizer", "accumulate"), [("sgd", None), ("adam", 2)], ids=["sgd", "adam-accumulate-2"]
)
def test_fit_keeps_half_precision_weights_feasible(policy, optimizer, accumulate):
    """jit_compile='auto', what users get: XLA on JAX and TensorFlow, eager on torch."""
    model = half_model()
    before = all_weights(model)
    if optimizer == "sgd":
        opt = keras.optimizers.SGD(0.05, gradient_accumulation_steps=accumulate)
    else:
        opt = keras.optimizers.Adam(0.01, gradient_accumulation_steps=accumulate)
    history = fit(model, opt, [EnforceConstraints()], jit_compile="auto")

    want = "float32" if policy.startswith("mixed") else policy
    assert {dtype_of(v) for v in model.weights} == {want}
    if policy == "mixed_float16":  # Keras wraps the optimizer itself
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history.history["loss"]).all()
    changed = [not np.array_equal(b, a) for b, a in zip(before, all_weights(model), strict=True)]
    assert sum(changed) >= 3, changed  # Adam's steps fall below bfloat16's resolution on a few
    assert_feasible(model)


@pytest.mark.parametrize(
    "policy", [pytest.param("mixed_float16", marks=pytest.mark.long_on("torch"))], indirect=True
)
def test_compiled_fit_with_loss_scaling(policy):
    """The one jit-compiled case on every backend (torch.compile is slow on CPU).

    On torch, within dynamo's recompile limit only with `SameCondNames`
    (conftest makes hitting the limit a failure).
    """
    model = half_model()
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01))
    fit(model, opt, [EnforceConstraints(), SameCondNames()], jit_compile=True)
    assert model.jit_compile
    assert_feasible(model)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
@pytest.mark.parametrize("enforce", [False, True], ids=["keras", "enforce"])
def test_skipped_loss_scale_steps_leave_initial_weights_unprojected(policy, enforce):
    """The loss scaler skips a step with non-finite gradients; the optimizer then projects nothing."""
    model = half_model()
    start = kc.violations(model)
    # 2**60 overflows every float16 gradient: all 8 steps are skipped.
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=2.0**60)
    callbacks = [EnforceConstraints()] if enforce else []
    fit(model, opt, callbacks, jit_compile="auto")
    assert float(to_np(opt.iterations)) == 0  # no step was applied
    if enforce:
        assert_feasible(model)
    else:
        assert kc.violations(model) == pytest.approx(start)
        assert max(start.values()) > 0.1


def test_gradient_accumulation_projects_on_every_micro_step():
    """Keras applies the constraint after each micro-step, not once per update.

    For a projection that costs time only (P(P(w)) = P(w) and the weights do
    not move between updates). A constraint that is not a projection
    compounds: `MinMaxNorm(rate=0.5)` moves the norm half way per call, so
    with 2 micro-steps per update the norm moves 3/4 of the way. Nothing
    outside Keras's optimizer can change this.
    """
    keras.utils.set_random_seed(0)
    layer = keras.layers.Dense(
        1, use_bias=False, kernel_constraint=kc.MinMaxNorm(1.0, 1.0, rate=0.5, axis=0)
    )
    model = keras.Sequential([keras.Input((6,)), layer])
    layer.kernel.assign([[3.0], [0.0], [4.0], [0.0], [0.0], [0.0]])  # norm 5
    opt = keras.optimizers.SGD(0.0, gradient_accumulation_steps=2)  # only the constraint moves w
    fit(model, opt, epochs=1, jit_compile="auto")  # 4 batches: 2 updates, 4 micro-steps
    norm = float(np.linalg.norm(to_np(layer.kernel.value)))
    assert float(to_np(opt.iterations)) == 2
    assert norm == pytest.approx(1.0 + 4.0 * 0.5**4, rel=1e-5)  # 4 calls, not 2
