"""Keras models in torch training loops: wrappers holding a model as `.module`, and `project_after_step`.

A torch loop wraps the model (`DistributedDataParallel`, `DataParallel`)
and steps a `torch.optim` optimizer, so Keras's optimizer, which applies
the constraints, never runs. The wrapper tests run on every backend with a
plain object holding `.module`; the ones with torch's own wrappers and
optimizers run on the torch backend, where a torch optimizer can train a
Keras model's variables. Two processes under DDP: `tests/test_multiprocess.py`.
"""

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import BACKEND
from tests.models import assert_feasible, constrained, push_outside, small_model
from tests.references import violation

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


# ------------------------------- compiled train steps: no break of our own


def matrix_model(conv_methods, dense_methods):
    """Conv2D and Dense kernels, each under SpectralNorm with one of the methods given."""
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 2))]
    layers += [
        keras.layers.Conv2D(4, 3, kernel_constraint=kc.SpectralNorm(1.0, method=m))
        for m in conv_methods
    ]
    layers.append(keras.layers.Flatten())
    layers += [
        keras.layers.Dense(5, kernel_constraint=kc.SpectralNorm(0.5, method=m))
        for m in dense_methods
    ]
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


@torch_only
@pytest.mark.parametrize(
    "conv_methods, dense_methods",
    [(["gram", "power"], ["svd", "scale"]), (["svd", "scale"], ["gram", "power"])],
    ids=["conv-gram-power", "dense-gram-power"],
)
def test_a_compiled_train_step_breaks_only_where_keras_does(conv_methods, dense_methods):
    """Keras's torch train_step breaks the graph at `loss.backward()`; the constraints add none.

    A constraint can compile alone with no break and still break inside the
    optimizer's update (Keras's `ops.max` on torch, for one, reads
    `result.values`, which Dynamo can not trace there). The reasons are
    compared, not the counts: Keras's own break repeats once per recompile.
    """
    from torch._dynamo.utils import counters

    model = matrix_model(conv_methods, dense_methods)
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype("float32")
    before = dict(counters["graph_break"])
    model.fit(x, np.ones((16, 1), "float32"), batch_size=8, epochs=1, verbose=0)
    met = {r for r, n in counters["graph_break"].items() if n > before.get(r, 0)}
    reasons = [r.splitlines()[0] for r in met]
    assert reasons, "no graph break at all: Keras's own at loss.backward() was expected"
    assert set(reasons) == {"Unsupported Tensor.backward() call"}, reasons
