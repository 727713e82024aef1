"""variables.py: `project`, `violations`, `constrain`, `Variable` and `project_after_step`,
constraints outside the optimizer step."""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import BACKEND, apply_gradients, float64_enabled
from tests.helpers import EPS, FLOAT_DTYPES, to_np, tol
from tests.models import (
    Shifted,
    assert_feasible,
    constrained,
    dense_model,
    fit,
    push_outside,
    scaled_model,
    small_model,
)
from tests.references import violation


def pick(model, how):
    if how == "model":
        return model
    if how == "layers":
        return model.layers
    if how == "variables":
        return model.weights
    return [model.layers[1], [model.weights, model.layers[:1]]]  # nested, overlapping


@pytest.mark.parametrize("how", ["model", "layers", "variables", "nested"])
def test_project_makes_every_constrained_weight_feasible(how):
    keras.utils.set_random_seed(0)
    model, _ = scaled_model()
    push_outside(model)
    variables = constrained(model)
    assert len(variables) == 7  # 6 trainable kernels and biases, 1 non-trainable
    free = {v.path: to_np(v.value) for v in model.weights if v.constraint is None}

    assert kc.project(pick(model, how)) == len(variables)

    for v in variables:
        assert violation(v) <= tol("float32", 3.0), v.path
    for v in model.weights:  # unconstrained weights are left alone
        if v.constraint is None:
            np.testing.assert_array_equal(to_np(v.value), free[v.path])


def test_project_of_a_feasible_model_changes_nothing():
    model, _ = dense_model()
    kc.project(model)
    before = [to_np(v.value) for v in model.weights]
    kc.project(model)
    for b, v in zip(before, model.weights, strict=True):
        np.testing.assert_allclose(to_np(v.value), b, rtol=0, atol=tol("float32"))


def test_violations_match_an_independent_computation():
    keras.utils.set_random_seed(0)
    model, _ = scaled_model()
    push_outside(model)
    found = kc.violations(model)
    assert list(found) == [v.path for v in constrained(model)]
    for v in constrained(model):
        assert isinstance(found[v.path], float)
        assert found[v.path] == pytest.approx(violation(v), rel=1e-6)
    assert min(found.values()) > 0.0
    kc.project(model)
    assert max(kc.violations(model).values()) <= tol("float32", 3.0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_project_and_violations_in_every_dtype(dtype):
    with float64_enabled():
        v = kc.Variable(
            [[-2.0, 1.0], [3.0, -0.25]], dtype=dtype, constraint=kc.MaxNorm(1.0), project=False
        )
        worst = kc.violations(v)[v.path]
        # Column 0 = (-2, 3) is scaled onto the unit ball: its 3 moves the most.
        assert worst == pytest.approx(3.0 - 3.0 / np.hypot(2.0, 3.0), rel=0, abs=12 * EPS[dtype])
        assert kc.project(v) == 1
        assert keras.backend.standardize_dtype(v.dtype) == dtype
        assert kc.violations(v)[v.path] <= tol(dtype, 3.0)


def test_violations_of_known_values_and_edge_cases():
    a = kc.Variable([-0.5, 2.0], constraint=kc.NonNeg(), project=False, name="w")
    b = kc.Variable([0.5, -3.0], constraint=kc.NonNeg(), project=False, name="w")
    empty = kc.Variable(np.zeros((0, 3)), constraint=kc.MaxNorm(1.0), name="empty")
    free = keras.Variable([-1.0], name="free")
    assert kc.violations([a, b, empty, free, a]) == {"w": 0.5, "w#2": 3.0, "empty": 0.0}
    assert kc.violations([]) == {}
    assert kc.project(free) == 0


@pytest.mark.parametrize("bad", [np.ones(3), "model", None, 3.0])
def test_project_and_violations_reject_what_is_not_a_variable_or_layer(bad):
    for fn in (kc.project, kc.violations):
        with pytest.raises(TypeError, match="keras.Variable, a layer or model"):
            fn(bad)


def apply_step(variable, grad):
    """One optimizer step on a standalone variable, as a custom loop does it."""
    grad = keras.ops.convert_to_tensor(grad, dtype=variable.dtype)
    apply_gradients(keras.optimizers.SGD(1.0), [grad], [variable])


def test_keras_variable_drops_its_constraint_and_constrain_restores_it():
    # The Keras behaviour this module works around; if Keras starts keeping
    # the argument, `Variable`'s docstring and the README need updating.
    plain = keras.Variable([1.0, 2.0], constraint=kc.NonNeg())
    assert plain.constraint is None
    apply_step(plain, [3.0, 0.0])
    assert to_np(plain.value).tolist() == [-2.0, 2.0]  # the optimizer never projected

    kept = kc.constrain(keras.Variable([1.0, 2.0]), kc.NonNeg())
    apply_step(kept, [3.0, 0.0])
    assert to_np(kept.value).tolist() == [0.0, 2.0]


@pytest.mark.parametrize("make", ["Variable", "constrain"])
def test_a_constrained_standalone_variable_starts_feasible_unless_asked(make):
    def build(project):
        if make == "Variable":
            return kc.Variable([-1.0, 2.0], constraint="non_neg", project=project)
        return kc.constrain(keras.Variable([-1.0, 2.0]), "non_neg", project=project)

    assert to_np(build(True).value).tolist() == [0.0, 2.0]
    v = build(False)
    assert isinstance(v.constraint, kc.NonNeg)
    assert to_np(v.value).tolist() == [-1.0, 2.0]


def test_constrain_accepts_identifiers_and_none():
    v = kc.constrain(keras.Variable([1.0]), {"class_name": "Clip", "config": {"min_value": 0.0}})
    assert isinstance(v.constraint, kc.Clip)
    assert kc.constrain(v, None).constraint is None
    with pytest.raises(ValueError, match="Unknown constraint identifier"):
        kc.constrain(v, "no_such_constraint")


def test_constrain_warns_that_the_optimizer_skips_a_non_trainable_variable():
    with pytest.warns(UserWarning, match="not trainable.*kconstraints.project"):
        v = kc.Variable([-1.0], trainable=False, constraint=kc.NonNeg())
    assert to_np(v.value).tolist() == [0.0]


@pytest.mark.parametrize("bad", [np.ones(3), [1.0, 2.0]])
def test_constrain_rejects_what_is_not_a_keras_variable(bad):
    with pytest.raises(TypeError, match="expected a keras.Variable"):
        kc.constrain(bad, kc.NonNeg())


def test_variable_rejects_keywords_keras_would_drop():
    with pytest.raises(TypeError, match=r"silently ignore \['regularizer'\]"):
        kc.Variable([1.0], constraint=kc.NonNeg(), regularizer="l2")
    v = kc.Variable([1.0], constraint=kc.NonNeg(), name="kept", aggregation="mean")
    assert (v.name, v.aggregation) == ("kept", "mean")


class ProjectEachBatch(keras.callbacks.Callback):
    """Holds the model itself: Keras's `Callback.model` would sync JAX's state on its own."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def on_train_batch_end(self, batch, logs=None):
        kc.project(self.target)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["eager", "jit"])
def test_a_projection_made_from_a_callback_lands(jit_compile):
    """On JAX, fit() writes its own copy of the state back at epoch end; project syncs first."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    layer = Shifted()
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    layer.shift.assign([-1.0, 2.0, -3.0, 4.0])
    callbacks = [ProjectEachBatch(model)]
    fit(
        model,
        keras.optimizers.SGD(0.01),
        callbacks,
        input_shape=(4,),
        epochs=1,
        jit_compile=jit_compile,
    )
    assert to_np(layer.shift.value).tolist() == [0.0, 2.0, 0.0, 4.0]


# ------------------------------------- constraints with a per-step estimate


def outside_unseen():
    """A matrix with sigma_1 = 1.1 whose largest row norm, the power method's estimate
    with no step, is below 1: `SpectralNorm(1.0, method="power", iterations=0)` keeps it."""
    rng = np.random.default_rng(4)
    u, _ = np.linalg.qr(rng.normal(size=(7, 4)))
    v, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    w = ((u * [1.1, 1.0, 0.5, 0.2]) @ v.T).astype("float32")
    assert np.max(np.linalg.norm(w, axis=1)) < 1.0 < np.linalg.norm(w, 2)
    return w


def power_variable():
    power = kc.SpectralNorm(1.0, method="power", iterations=0)
    v = kc.Variable(outside_unseen(), constraint=power, project=False, name="kernel")
    np.testing.assert_array_equal(to_np(power(v.value)), to_np(v.value))  # the estimate sees none
    return v


def test_violations_report_the_true_excess_not_the_estimate():
    v = power_variable()
    w = to_np(v.value)
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    excess = np.max(np.abs(w - (u * np.minimum(s, 1.0)) @ vt))
    assert excess > 1e-3
    assert kc.violations(v)["kernel"] == pytest.approx(excess, abs=1e-6)


def test_project_is_exact_unless_asked_for_the_estimate():
    v = power_variable()
    before = to_np(v.value)
    kc.project(v, exact=False)
    np.testing.assert_array_equal(to_np(v.value), before)
    kc.project(v)
    assert np.linalg.norm(to_np(v.value).astype("float64"), 2) <= 1 + 1e-5
    assert kc.violations(v)["kernel"] <= tol("float32", 1.0)
    assert v.constraint.method == "power"  # the variable keeps its per-step constraint


# ---------------------------------- torch loops: wrappers, project_after_step
#
# A torch loop wraps the model (`DistributedDataParallel`, `DataParallel`)
# and steps a `torch.optim` optimizer, so Keras's optimizer, which applies
# the constraints, never runs. The wrapper tests run on every backend with a
# plain object holding `.module`; the ones with torch's own wrappers and
# optimizers run on the torch backend, where a torch optimizer can train a
# Keras model's variables. Two processes under DDP: `tests/test_multiprocess.py`.

torch_only = pytest.mark.skipif(
    BACKEND != "torch", reason="a torch optimizer or wrapper trains a Keras model on torch only"
)


class Wrapper:
    """What torch's wrappers have in common: the wrapped model as `.module`."""

    def __init__(self, module):
        self.module = module


@pytest.mark.parametrize("wrap", [Wrapper, lambda m: Wrapper(Wrapper(m)), lambda m: [Wrapper(m)]])
def test_a_wrapper_holding_a_model_as_module_stands_for_the_model(wrap):
    model = small_model()
    push_outside(model)
    assert kc.constrained_variables(wrap(model)) == constrained(model)
    assert kc.violations(wrap(model)) == kc.violations(model)
    assert kc.project(wrap(model)) == len(constrained(model))
    assert_feasible(model)


@pytest.mark.parametrize("module", [None, object(), "a string"])
def test_a_wrapper_without_a_keras_model_inside_is_still_refused(module):
    wrapper = Wrapper(module)
    with pytest.raises(TypeError, match=r"Expected a keras.Variable, .* of type Wrapper\."):
        kc.project(wrapper)


def test_a_wrapper_that_holds_itself_is_refused_not_followed_forever():
    wrapper = Wrapper(None)
    wrapper.module = Wrapper(wrapper)
    with pytest.raises(TypeError, match="of type Wrapper"):
        kc.violations(wrapper)


@pytest.mark.parametrize("make", [keras.optimizers.SGD, object], ids=["keras", "object"])
def test_project_after_step_takes_torch_optimizers_only(make):
    optimizer = make()
    model = small_model()
    push_outside(model)
    kind = type(optimizer).__name__
    with pytest.raises(TypeError, match=rf"project_after_step: `optimizer` .* got {kind} from"):
        kc.project_after_step(optimizer, model)
    assert max(violation(v) for v in constrained(model)) > 0.1, "a refused call projected"


# ------------------------------------------------------------------ torch


def torch_sgd(model, lr=1.0):
    import torch

    return torch.optim.SGD(model.parameters(), lr=lr)


def step_down(model, optimizer):
    """One step that drives every weight down, out of NonNeg's set: loss = sum of the weights."""
    optimizer.zero_grad()
    sum(w.value.sum() for w in model.weights).backward()
    optimizer.step()


@torch_only
def test_the_optimizer_projects_after_every_step_until_the_hook_is_removed():
    model = small_model()
    push_outside(model)
    optimizer = torch_sgd(model)
    handle = kc.project_after_step(optimizer, model)
    assert_feasible(model)  # projected at once
    for _ in range(3):
        step_down(model, optimizer)
        assert_feasible(model)
    handle.remove()
    step_down(model, optimizer)
    assert max(violation(v) for v in constrained(model)) > 0.5


@torch_only
def test_project_false_waits_for_the_first_step():
    model = small_model()
    push_outside(model)
    optimizer = torch_sgd(model, lr=0.0)
    kc.project_after_step(optimizer, model, project=False)
    assert max(violation(v) for v in constrained(model)) > 0.1
    step_down(model, optimizer)
    assert_feasible(model)


@torch_only
def test_a_wrong_model_fails_at_registration_not_at_the_first_step():
    model = small_model()
    optimizer = torch_sgd(model)
    with pytest.raises(TypeError, match="got 3 of type int"):
        kc.project_after_step(optimizer, 3)
    step_down(model, optimizer)  # a hook left behind would raise here


@torch_only
def test_data_parallel_on_the_cpu():
    import torch

    model = small_model()
    push_outside(model)
    net = torch.nn.DataParallel(model)
    assert kc.project(net) == len(constrained(model))
    optimizer = torch_sgd(net)
    kc.project_after_step(optimizer, net)
    step_down(model, optimizer)
    assert_feasible(model)


@pytest.fixture
def one_process_group():
    """A process group of one process, in memory: enough for a real DistributedDataParallel."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@torch_only
def test_distributed_data_parallel_trains_as_the_bare_model(one_process_group):
    import torch

    x = torch.from_numpy(np.random.default_rng(0).normal(size=(16, 6)).astype("float32"))
    results = []
    for wrap in [lambda m: m, torch.nn.parallel.DistributedDataParallel]:
        model = small_model()
        push_outside(model)
        net = wrap(model)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        kc.project_after_step(optimizer, net)
        for _ in range(4):
            optimizer.zero_grad()
            (net(x) ** 2).mean().backward()
            optimizer.step()
        assert_feasible(model)
        results.append([v.numpy() for v in model.weights])
    for bare, wrapped in zip(*results, strict=True):
        np.testing.assert_allclose(wrapped, bare, rtol=1e-6, atol=1e-7)


# --- constrain and the layer's config: a saved model keeps the constraint ---


def test_constrain_survives_save_and_load_and_training_resumes_constrained(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1), keras.layers.Dense(1)])
    kc.constrain(model.layers[0].kernel, kc.NonNeg())
    assert isinstance(model.layers[0].kernel_constraint, kc.NonNeg)
    path = tmp_path / "constrained.keras"
    model.save(path)

    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[0].kernel.constraint, kc.NonNeg)
    assert loaded.layers[1].kernel.constraint is None
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    # The second layer fixed at +1: the target then pulls the first kernel negative.
    loaded.layers[1].kernel.assign(np.ones((1, 1), "float32"))
    loaded.layers[1].trainable = False
    loaded.compile(keras.optimizers.SGD(0.01), "mse")
    history = loaded.fit(x, -10 * x.sum(axis=1, keepdims=True), epochs=3, verbose=0)
    kernel = to_np(loaded.layers[0].kernel.value)
    assert np.all(np.isfinite(history.history["loss"]))
    assert kernel.min() >= 0.0
    assert (kernel == 0).any()  # the constraint was active, not idle


def test_constrain_none_clears_the_layer_argument_too():
    layer = keras.layers.Dense(2, kernel_constraint=kc.NonNeg())
    layer.build((3,))
    kc.constrain(layer.kernel, None)
    assert layer.kernel.constraint is None and layer.kernel_constraint is None


KERAS_LAYERS = [
    (keras.layers.Dense(2), (3,)),
    (keras.layers.EinsumDense("ab,bc->ac", output_shape=2, bias_axes="c"), (3,)),
    (keras.layers.Conv2D(2, 3), (5, 5, 3)),
    (keras.layers.DepthwiseConv2D(3), (5, 5, 3)),
    (keras.layers.SeparableConv1D(2, 3), (5, 3)),
    (keras.layers.Embedding(5, 2), (3,)),
    (keras.layers.BatchNormalization(), (3,)),
    (keras.layers.LayerNormalization(), (3,)),
    (keras.layers.PReLU(), (3,)),
    (keras.layers.LSTM(2), (4, 3)),
]


@pytest.mark.parametrize(
    ("layer", "shape"), KERAS_LAYERS, ids=[type(lay).__name__ for lay, _ in KERAS_LAYERS]
)
def test_constrain_sets_the_argument_keras_builds_each_weight_from(layer, shape):
    model = keras.Sequential([keras.Input(shape), layer])
    weights = [v for v in model.weights if v.trainable]
    assert weights
    clip = kc.Clip(-1.0, 1.0)
    for v in weights:
        kc.constrain(v, clip)
    config = type(layer).from_config(layer.get_config())
    rebuilt = keras.Sequential([keras.Input(shape), config])
    # Built from its config alone, each weight gets back its constraint.
    built = [v.constraint for v in rebuilt.weights if v.trainable]
    assert len(built) == len(weights)
    assert all(isinstance(c, kc.Clip) and c.get_config() == clip.get_config() for c in built)


def test_constrain_warns_where_a_custom_layer_saves_no_constraint():
    class Scale(keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.scale

    model = keras.Sequential([keras.Input((3,)), Scale()])
    with pytest.warns(UserWarning, match="will not keep NonNeg"):
        kc.constrain(model.layers[0].scale, kc.NonNeg())
    assert isinstance(model.layers[0].scale.constraint, kc.NonNeg)


def test_a_constraint_set_on_a_built_layer_is_rejected_not_ignored():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.layers[0].kernel_constraint = kc.NonNeg()  # Keras would never apply it
    with pytest.raises(ValueError, match="kernel_constraint.*carries no constraint"):
        kc.project(model)
    with pytest.raises(ValueError, match="kernel_constraint"):
        kc.violations(model)
    model.compile("sgd", "mse")
    x = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="kernel_constraint"):
        model.fit(x, x[:, :2], verbose=0, callbacks=[kc.callbacks.EnforceConstraints()])
    kc.constrain(model.layers[0].kernel, model.layers[0].kernel_constraint)
    assert kc.project(model) == 1


def test_constrain_checks_the_shape_even_without_projecting():
    v = keras.Variable(np.ones((4, 3), "float32"))
    with pytest.raises(ValueError, match=r"`axis`=\[0, 1, 2\] is out of range .* \(4, 3\)"):
        kc.constrain(v, kc.MaxNorm(2.0, axis=[0, 1, 2]), project=False)
    assert v.constraint is None  # nothing attached on failure
    with pytest.raises(ValueError, match="out of range"):
        kc.Variable(np.ones(3, "float32"), constraint=kc.UnitNorm(axis=1), project=False)
