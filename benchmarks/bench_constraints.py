"""The benchmark, as pytest-benchmark tests: every registry variant against a copy, its twins, in train steps.

`test_projection`: one compiled call of a constraint on a weight, next to
`2 * w` on the same array in the same group (the memory-bandwidth floor:
read once, write once; not `-w`, which XLA's CPU backend runs several times
slower than a product) and to the other libraries' twins. `test_train_step`:
a compiled Keras train step with every kernel constrained, next to the same
step unconstrained (and, on torch, a plain-torch MLP next to torch's own
parametrizations). Run it with `python -m benchmarks`, or with pytest:
`KERAS_BACKEND=jax pytest benchmarks/bench_constraints.py --bench-quick`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable

import keras
import numpy as np
import pytest

from benchmarks import backend
from benchmarks.cases import select

# Benchmarks time; warnings are the test suite's business.
pytestmark = pytest.mark.filterwarnings("ignore")
# A call this slow (seconds) gets 3 rounds of one call: its length already averages.
SLOW = 0.5


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool = False
    sizes: tuple = (10**4, 10**5, 10**6, 10**7, 10**8)  # near-square Dense kernels
    matrix_sizes: tuple = (256, 512, 1024, 2048, 4096)  # square kernels, matrix family
    cases: tuple | None = None
    models: tuple = ("mlp", "cnn")
    train_cases: tuple | None = None
    mlp: tuple = (512, (512, 512), 10, 256)  # inputs, hidden widths, classes, batch
    cnn: tuple = (32, 3, (32, 64, 64), 10, 64)  # side, channels, 3x3 conv filters, classes, batch

    def to_json(self):
        return dataclasses.asdict(self)


# One case per kind of twin in the quick train steps (a Keras constraint, optax,
# a torch parametrization, a Keras wrapper): torch.compile takes 5-10 s a model.
QUICK = dict(
    sizes=(10**4,), matrix_sizes=(32,), mlp=(32, (32, 32), 4, 16), cnn=(8, 2, (4, 4), 4, 8)
)
QUICK_TRAIN = ("NonNeg", "MaxNorm", "Simplex", "SpectralNorm")


def settings(config) -> Settings:
    """The run's settings from the `--bench-*` options (benchmarks/conftest.py)."""
    given = {}
    for name in ("sizes", "matrix_sizes", "cases", "models", "train_cases"):
        value = config.getoption(f"--bench-{name.replace('_', '-')}")
        if value is not None:
            value = tuple(v.strip() for v in value.split(",") if v.strip() and v != "none")
            given[name] = tuple(int(float(v)) for v in value) if "sizes" in name else value
    quick = config.getoption("--bench-quick")
    if quick and "cases" not in given:
        given.setdefault("train_cases", QUICK_TRAIN)
    return Settings(quick=quick, **{**(QUICK if quick else {}), **given})


@dataclasses.dataclass(frozen=True)
class Contender:
    """One timed callable: `build()` returns a zero-argument call, or None where it does not apply."""

    group: str
    case: str
    impl: str  # "kconstraints", a twin's library, or the group's "copy" / "unconstrained"
    label: str
    build: Callable = dataclasses.field(repr=False, compare=False)
    family: str = "-"
    shape: tuple | None = None

    def __str__(self):
        return f"{self.group}-{self.case}-{self.impl}".replace(" ", "-")

    def meta(self):
        return {f: getattr(self, f) for f in ("group", "case", "impl", "label", "family", "shape")}


@functools.lru_cache(maxsize=1)  # one weight alive at a time
def weight(shape):
    return backend.to_device(np.random.default_rng(0).normal(size=shape).astype("float32"))


def projection(make, shape):
    def build():
        fn = make(shape)
        if fn is None:
            return None
        compiled, w = backend.compile_fn(lambda w: fn(w)), weight(shape)
        return lambda: compiled(w)

    return build


def twin_of(case, twin):
    """The twin's `make(shape)`, given the case's own constraint for its arguments."""
    return lambda shape: twin.make(shape, case.make(shape))


def projection_plan(s: Settings):
    """Per weight shape a group: the copy, then each case that fits and its twins."""
    cases, plan = select(s.cases), []
    # Near-square Dense kernels `(input_dim, units)` of each size; square ones for matrices.
    shapes = [((math.isqrt(n), n // math.isqrt(n)), False) for n in s.sizes]
    for shape, square in shapes + [((n, n), True) for n in s.matrix_sizes]:
        gpu, size = backend.on_gpu(), math.prod(shape)
        chosen = [
            c
            for c in cases
            if (c.family == "matrix") == square and size <= (c.limit(backend.BACKEND, gpu) or size)
        ]
        group = f"projection {shape[0]}x{shape[1]}"
        add = lambda *a, **k: plan.append(Contender(group, *a, shape=shape, **k))  # noqa: E731, B023
        if chosen:
            add("copy", "copy", "2 * w (copy)", projection(lambda shape: lambda w: w * 2.0, shape))
        for c in chosen:
            add(
                c.name,
                "kconstraints",
                f"kconstraints.{c.name}",
                projection(c.make, shape),
                c.family,
            )
            for t in c.twins_on(backend.BACKEND):
                if t.make is not None:
                    add(c.name, t.library, t.name, projection(twin_of(c, t), shape), c.family)
    return plan


def kernel_shapes(name, spec):
    """The kernels, input to output, of the MLP (square hidden ones) or of the small CNN."""
    if name == "mlp":
        inputs, hidden, classes, _ = spec
        return list(itertools.pairwise([inputs, *hidden, classes]))
    _, channels, filters, classes, _ = spec
    convs = [(3, 3, a, b) for a, b in itertools.pairwise([channels, *filters])]
    return [*convs, (filters[-1], classes)]


def model_of(name, spec, kernel, wrapper):
    """The MLP or the CNN (3x3 convolutions, then pooling), every kernel under `kernel(shape)`."""
    shapes, wrap = kernel_shapes(name, spec), wrapper or (lambda layer: layer)
    x = start = keras.Input((spec[0],) if name == "mlp" else (spec[0], spec[0], spec[1]))
    for i, shape in enumerate(shapes):
        last = i == len(shapes) - 1
        args = dict(activation=None if last else "relu", kernel_constraint=kernel and kernel(shape))
        if len(shape) == 4:
            layer = keras.layers.Conv2D(shape[-1], 3, strides=2 if i else 1, padding="same", **args)
        else:
            if len(x.shape) == 4:
                x = keras.layers.GlobalAveragePooling2D()(x)
            layer = keras.layers.Dense(shape[1], **args)
        x = wrap(layer)(x)
    return keras.Model(start, x)


def keras_step(name, spec, kernel=None, wrapper=None):
    """Build and compile one model; its compiled train step as a zero-argument call."""

    def build():
        net = model_of(name, spec, kernel, wrapper)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        rng, batch = np.random.default_rng(0), spec[-1]
        x = backend.to_device(rng.normal(size=(batch, *net.input_shape[1:])).astype("float32"))
        y = backend.to_device(rng.integers(0, spec[-2], size=(batch,)).astype("int32"))
        net.optimizer.build(net.trainable_variables)  # outside the traced step
        net.compute_loss(x=x, y=y, y_pred=net(x))
        return backend.train_step(net, x, y)

    return build


def train_plan(s: Settings):
    """Per model a group: unconstrained, then each case and its Keras twins; torch's own on torch."""
    cases, plan = select(s.cases), []
    if s.train_cases is not None:
        chosen = {c.name for c in select(s.train_cases)}  # unknown names are an error
        cases = [c for c in cases if c.name in chosen]
    for name in s.models:
        spec, group = getattr(s, name), f"train {name}"
        add = lambda *a, **k: plan.append(Contender(group, *a, **k))  # noqa: E731, B023
        add("unconstrained", "unconstrained", "unconstrained", keras_step(name, spec))
        for c in cases:
            limit = c.limit(backend.BACKEND, backend.on_gpu(), cpu_only=True)
            if limit is not None and max(map(math.prod, kernel_shapes(name, spec))) > limit:
                continue
            step = keras_step(name, spec, kernel=c.make)
            add(c.name, "kconstraints", f"kconstraints.{c.name}", step, c.family)
            for t in c.twins_on(backend.BACKEND):
                if t.keras_constraint or t.wrapper:
                    kernel = twin_of(c, t) if t.keras_constraint else None
                    step = keras_step(name, spec, kernel=kernel, wrapper=t.wrapper)
                    add(c.name, t.library, t.name, step, c.family)
    if backend.BACKEND == "torch" and "mlp" in s.models:
        # Plain torch: projected by kconstraints after `optimizer.step()`, or parametrized.
        group, step = "train mlp-torch", functools.partial(backend.torch_mlp_step, s.mlp)
        add = lambda *a, **k: plan.append(Contender(group, *a, **k))  # noqa: E731
        for c in cases:
            for t in (t for t in c.twins_on("torch") if t.parametrize):
                if group not in {p.group for p in plan}:
                    add("unconstrained", "unconstrained", "unconstrained (torch)", step)
                label = f"kconstraints.{c.name} after optimizer.step()"
                add(
                    c.name, "kconstraints", label, functools.partial(step, project=c.make), c.family
                )
                parametrized = functools.partial(step, parametrize=t.parametrize)
                add(c.name, t.library, t.name, parametrized, c.family)
    return plan


# ---------------------------------------------------------------- the tests


def pytest_generate_tests(metafunc):
    if "contender" in metafunc.fixturenames:
        s = settings(metafunc.config)
        plans = {"test_projection": projection_plan, "test_train_step": train_plan}
        plan = plans[metafunc.function.__name__](s)
        metafunc.parametrize("contender", plan, ids=[str(c) for c in plan])


def measure(benchmark, contender):
    """Compile (timed apart, its torch graph breaks counted), then let pytest-benchmark time it.

    The timer (`backend.clock`) waits for the device at the end of each round.
    """
    benchmark.group = contender.group
    benchmark.extra_info.update(contender.meta())
    with backend.compiler_scope():
        call = contender.build()
        if call is None:
            pytest.skip(f"{contender.case} does not apply to {contender.shape}")
        compile_s, breaks, once = backend.first_call(call)
        benchmark.extra_info["compile_s"] = compile_s
        if breaks is not None:
            benchmark.extra_info["graph_breaks"] = breaks
        try:
            if once >= SLOW:
                benchmark.pedantic(backend.timed, (call,), rounds=3, iterations=1)
            else:
                benchmark(backend.timed, call)
        finally:
            backend.LAST[0] = None


def test_projection(benchmark, contender):
    measure(benchmark, contender)


def test_train_step(benchmark, contender):
    measure(benchmark, contender)
