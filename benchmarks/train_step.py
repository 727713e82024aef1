"""Train-step overhead: a compiled step with every kernel constrained, over the same step free.

Two Keras models (an MLP of square hidden kernels and a small CNN), each
built once per variant: unconstrained, every kernel under a kconstraints
constraint, or under another library's alternative. On torch a plain-torch
MLP also compares `torch.nn.utils.parametrizations` with a projection.
"""

from __future__ import annotations

import itertools

import keras
import numpy as np

from benchmarks import backend
from benchmarks.cases import twins_for
from benchmarks.timing import error_record, time_group

FREE = ("unconstrained", "-")


def mlp(spec, kernel=None, wrapper=None):
    inputs, hidden, classes, _ = spec
    x = start = keras.Input((inputs,))
    widths = [inputs, *hidden, classes]
    for i, units in enumerate(widths[1:]):
        layer = keras.layers.Dense(
            units,
            activation="relu" if i < len(hidden) else None,
            kernel_constraint=kernel((widths[i], units)) if kernel else None,
        )
        x = (wrapper(layer) if wrapper else layer)(x)
    return keras.Model(start, x)


def cnn(spec, kernel=None, wrapper=None):
    side, channels, filters, classes, _ = spec
    x = start = keras.Input((side, side, channels))
    previous = channels
    for i, count in enumerate(filters):
        layer = keras.layers.Conv2D(
            count,
            3,
            strides=1 if i == 0 else 2,
            padding="same",
            activation="relu",
            kernel_constraint=kernel((3, 3, previous, count)) if kernel else None,
        )
        x = (wrapper(layer) if wrapper else layer)(x)
        previous = count
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(
        classes, kernel_constraint=kernel((previous, classes)) if kernel else None
    )
    x = (wrapper(head) if wrapper else head)(x)
    return keras.Model(start, x)


MODELS = {"mlp": mlp, "cnn": cnn}


def data(name, spec, seed=0):
    rng = np.random.default_rng(seed)
    if name == "mlp":
        inputs, _, classes, batch = spec
        x = rng.normal(size=(batch, inputs))
    else:
        side, channels, _, classes, batch = spec
        x = rng.normal(size=(batch, side, side, channels))
    y = rng.integers(0, classes, size=(batch,))
    return backend.to_device(x.astype("float32")), backend.to_device(y.astype("int32"))


def keras_step(name, spec, kernel=None, wrapper=None):
    """Build, compile and build the optimizer of one model; return its step callable."""
    model = MODELS[name](spec, kernel, wrapper)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = data(name, spec)
    # Build the optimizer and the compiled loss outside the traced step.
    model.optimizer.build(model.trainable_variables)
    model.compute_loss(x=x, y=y, y_pred=model(x))
    return backend.train_step(model, x, y)


def variants(config, name, cases):
    """{(case, impl): (label, builder)} for one model; builders make step callables."""
    spec = getattr(config, name)
    out = {FREE: ("unconstrained", lambda: keras_step(name, spec))}
    for case in cases:
        out[(case.name, "kconstraints")] = (
            f"kconstraints.{case.name}",
            lambda case=case: keras_step(name, spec, kernel=case.make),
        )
        if not config.train_twins:
            continue
        for twin in twins_for(case, backend.BACKEND):
            if twin.keras_constraint:
                build = lambda t=twin: keras_step(name, spec, kernel=t.make)  # noqa: E731
            elif twin.wrapper is not None:
                build = lambda t=twin: keras_step(name, spec, wrapper=t.wrapper)  # noqa: E731
            else:
                continue
            out[(case.name, twin.library)] = (twin.name, build)
    return out


def torch_variants(config, cases):
    """Plain-torch MLP: free, projected by kconstraints, parametrized by torch."""
    spec = config.mlp
    out = {}
    for case in cases:
        for twin in twins_for(case, backend.BACKEND):
            if twin.parametrize is None:
                continue
            if not out:
                out[FREE] = ("unconstrained (torch)", lambda: backend.torch_mlp_step(spec))
            out[(case.name, "kconstraints")] = (
                f"kconstraints.{case.name} after optimizer.step()",
                lambda case=case: backend.torch_mlp_step(spec, project=case.make),
            )
            out[(case.name, twin.library)] = (
                twin.name,
                lambda t=twin: backend.torch_mlp_step(spec, parametrize=t.parametrize),
            )
    return out


def kernel_sizes(name, spec):
    """The entries of each kernel of model `name` (what its constraints see)."""
    if name == "mlp":
        inputs, hidden, classes, _ = spec
        widths = [inputs, *hidden, classes]
        return [a * b for a, b in itertools.pairwise(widths)]
    _, channels, filters, classes, _ = spec
    ins = [channels, *filters[:-1]]
    return [9 * a * b for a, b in zip(ins, filters, strict=True)] + [filters[-1] * classes]


def trains(case, name, config):
    """Whether `case` fits its CPU limit on this backend (`Case.cpu_limit`) in model `name`."""
    limit = case.cpu_limit(backend.BACKEND, backend.on_gpu())
    return limit is None or max(kernel_sizes(name, getattr(config, name))) <= limit


def plan(config, cases):
    """[(model label, variants)] of every group of steps timed together."""
    if config.train_cases is not None:
        cases = [c for c in cases if c.name in config.train_cases]
    groups = [
        (name, variants(config, name, [c for c in cases if trains(c, name, config)]))
        for name in config.train_models
    ]
    if backend.BACKEND == "torch" and config.train_twins and "mlp" in config.train_models:
        native = torch_variants(config, cases)
        if native:
            groups.append(("mlp-torch", native))
    return groups


def steps(config, cases):
    return sum(len(v) + config.repeats for _, v in plan(config, cases))


def run(config, cases, progress):
    records = []
    for model, group in plan(config, cases):
        progress.set_postfix_str(f"train step {model}")
        calls = {}
        errors = {}
        for key, (_, build) in group.items():
            try:
                calls[key] = build()
            except Exception as err:  # a variant that can not be built is a result too
                errors[key] = error_record(err)
                progress.update()
        timed = time_group(calls, config, progress.update)
        timed.update(errors)
        free_s = timed.get(FREE, {}).get("time_s")
        for key, result in timed.items():
            record = {
                "model": model,
                "case": key[0],
                "impl": key[1],
                "impl_name": group[key][0],
                **result,
            }
            if free_s and "time_s" in result:
                record["unconstrained_s"] = free_s
                record["overhead"] = result["time_s"] / free_s - 1
            records.append(record)
    return records
