"""`python -m benchmarks.focus`: the few comparisons the project sets speed targets on.

The main benchmark (`python -m benchmarks`) times every constraint on a ladder
of sizes. These are fixed questions, each answered by one group of contenders
timed together (`timing.time_group`: the same rounds, in a random order), so
that each ratio comes from the same minutes of the same machine: is the
threshold search of `Simplex` faster than optax's and than the sort it
replaced; how long `Monotonic` takes on long slices next to a sort; what a
train step costs with the power method next to Keras's `SpectralNormalization`
wrapper; what certified convolutions cost in a CNN step.

Each backend runs in its own process (Keras fixes its backend at import).
The tables go to `focus.md` and the numbers to `focus.json`, next to the main
run's results (`benchmarks/results/<device>/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Callable

from benchmarks.config import Config

ROOT = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One question: `build(size)` returns {label: zero-argument compiled call}.

    `size` is the weight shape (projections) or the model spec (train steps);
    `quick` is a tiny one, for the harness test that every contender builds.
    """

    name: str
    question: str
    build: Callable
    size: tuple
    quick: tuple
    # The label every other contender's time is divided by.
    baseline: str
    backends: tuple = ("jax", "tensorflow", "torch")


# ------------------------------------------------------------ contenders


def _weight(shape, seed=0):
    import numpy as np

    from benchmarks.backend import to_device

    return to_device(np.random.default_rng(seed).normal(size=shape).astype("float32"))


def _projections(shape, contenders):
    """{label: call} of compiled projections of one random weight of `shape`."""
    from benchmarks.backend import compile_fn

    w = _weight(shape)
    calls = {}
    for label, fn in contenders.items():
        if fn is None:
            continue
        compiled = compile_fn(fn)
        calls[label] = lambda compiled=compiled: compiled(w)
    return calls


def _copy(w):
    return w * 2.0


def _sort(axis):
    from keras import ops

    return lambda w: ops.sort(w, axis=axis)


def _optax(name, **kwargs):
    """optax's projection of each column (vmapped over the last axis); None off JAX."""
    from benchmarks.backend import BACKEND

    if BACKEND != "jax":
        return None
    import jax
    from optax import projections

    fn = getattr(projections, name)
    return jax.vmap(lambda v: fn(v, **kwargs), in_axes=-1, out_axes=-1)


def _threshold_group(cls, shape, optax_name):
    import kconstraints as kc
    from benchmarks.cases import sort_twin

    cls = getattr(kc, cls)
    return _projections(
        shape,
        {
            "copy (2 * w)": _copy,
            "sort along the slice": _sort(0),
            f"kconstraints.{cls.__name__}": cls(1.0, axis=0),
            f"kconstraints.{cls.__name__}, one sort per slice (before)": sort_twin(cls, 1.0).make(
                shape
            ),
            f"optax.projections.{optax_name} (vmap)": _optax(optax_name, scale=1.0),
        },
    )


def _monotonic_group(shape, quadratic):
    import kconstraints as kc

    contenders = {
        "copy (2 * w)": _copy,
        "sort along the slice": _sort(0),
        "kconstraints.Monotonic": kc.Monotonic(axis=0),
    }
    if quadratic:
        contenders["kconstraints.Monotonic, pairwise (before)"] = kc.Monotonic(
            axis=0, method="pairwise"
        )
    return _projections(shape, contenders)


def _sparse_group(shape):
    from keras import ops

    import kconstraints as kc

    return _projections(
        shape,
        {
            "copy (2 * w)": _copy,
            "sort along the slice": _sort(0),
            "sort of |w|, whole array": lambda w: ops.sort(ops.reshape(ops.abs(w), (-1,))),
            "kconstraints.TopK(density=0.1, axis=0)": kc.TopK(density=0.1, axis=0),
            "kconstraints.TopK(density=0.1) (whole array)": kc.TopK(density=0.1),
            "kconstraints.NM(2, 4)": kc.NM(2, 4),
        },
    )


def _matrix_group(shape):
    import kconstraints as kc

    return _projections(
        shape,
        {
            "copy (2 * w)": _copy,
            "kconstraints.DoublyStochastic": kc.DoublyStochastic(),
            "kconstraints.SpectralNorm (svd)": kc.SpectralNorm(1.0),
        },
    )


def _steps(model, spec, variants):
    """{label: train-step call} for the variants {label: (kernel maker, wrapper)}."""
    from benchmarks.train_step import keras_step

    return {
        label: keras_step(model, spec, kernel=kernel, wrapper=wrapper)
        for label, (kernel, wrapper) in variants.items()
    }


def _spectral_train(spec):
    import keras

    import kconstraints as kc
    from benchmarks.backend import BACKEND
    from benchmarks.cases import power_before

    def spectral(method):
        return lambda shape: kc.SpectralNorm(1.0, method=method)

    variants = {
        "unconstrained": (None, None),
        "keras.layers.SpectralNormalization": (None, keras.layers.SpectralNormalization),
        'kconstraints.SpectralNorm(method="power")': (spectral("power"), None),
        'kconstraints.SpectralNorm(method="power"), before': (lambda shape: power_before(), None),
        'kconstraints.SpectralNorm(method="gram")': (spectral("gram"), None),
        'kconstraints.SpectralNorm(method="svd")': (spectral("svd"), None),
    }
    if BACKEND == "tensorflow" and spec[0] > 256:
        # XLA's SVD on a CPU is a Jacobi iteration: this group had not
        # finished after 21 minutes on 2 cores with it (the main benchmark
        # leaves SVDs of 1024-wide kernels out on TensorFlow too).
        del variants['kconstraints.SpectralNorm(method="svd")']
    return _steps("mlp", spec, variants)


def _conv_train(spec):
    import kconstraints as kc

    def conv(make):
        # The Dense head keeps an exact spectral norm; the convolutions get `make`.
        return lambda shape: make() if len(shape) > 2 else kc.SpectralNorm(1.0)

    return _steps(
        "cnn",
        spec,
        {
            "unconstrained": (None, None),
            "kconstraints.ConvSpectralNorm": (conv(kc.ConvSpectralNorm), None),
            "kconstraints.AOL": (conv(kc.AOL), None),
            "kconstraints.SpectralNorm (reshaped kernel)": (conv(kc.SpectralNorm), None),
        },
    )


COMPARISONS = [
    Comparison(
        "simplex-1024x4096",
        "Simplex on 1024 slices of 4096: the threshold search against the sort and optax",
        lambda shape: _threshold_group("Simplex", shape, "projection_simplex"),
        (4096, 1024),
        (16, 4),
        "copy (2 * w)",
    ),
    Comparison(
        "l1ball-1024x4096",
        "L1Ball on 1024 slices of 4096: the threshold search against the sort and optax",
        lambda shape: _threshold_group("L1Ball", shape, "projection_l1_ball"),
        (4096, 1024),
        (16, 4),
        "copy (2 * w)",
    ),
    Comparison(
        "simplex-1e7",
        "Simplex on 1e7 entries (3162 slices of 3162) against a copy",
        lambda shape: _threshold_group("Simplex", shape, "projection_simplex"),
        (3162, 3162),
        (5, 5),
        "copy (2 * w)",
    ),
    Comparison(
        "l1ball-1e7",
        "L1Ball on 1e7 entries (3162 slices of 3162) against a copy",
        lambda shape: _threshold_group("L1Ball", shape, "projection_l1_ball"),
        (3162, 3162),
        (5, 5),
        "copy (2 * w)",
    ),
    Comparison(
        "monotonic-16x65536",
        "Monotonic on 16 slices of 65536 against a sort of the same array",
        lambda shape: _monotonic_group(shape, quadratic=False),
        (65536, 16),
        (64, 2),
        "sort along the slice",
    ),
    Comparison(
        "monotonic-256x1024",
        "Monotonic on 256 slices of 1024: the long-slice method must not slow short slices",
        lambda shape: _monotonic_group(shape, quadratic=True),
        (1024, 256),
        (16, 4),
        "sort along the slice",
    ),
    Comparison(
        "sparse-1024x1024",
        "TopK and NM on a 1024 x 1024 kernel next to a copy and a sort",
        _sparse_group,
        (1024, 1024),
        (8, 4),
        "copy (2 * w)",
    ),
    Comparison(
        "doubly-stochastic-256",
        "DoublyStochastic on a 256 x 256 matrix",
        _matrix_group,
        (256, 256),
        (4, 4),
        "copy (2 * w)",
    ),
    Comparison(
        "spectral-mlp-step",
        "A train step of a 3-layer 1024-wide MLP (batch 64), every kernel spectrally bounded",
        _spectral_train,
        (1024, (1024, 1024), 10, 64),
        (8, (8, 8), 2, 4),
        "keras.layers.SpectralNormalization",
    ),
    Comparison(
        "lipschitz-cnn-step",
        "A train step of a small CNN (32x32x3, 3 convolutions, batch 64) with certified convolutions",
        _conv_train,
        (32, 3, (32, 64, 64), 10, 64),
        (6, 2, (2, 2, 2), 2, 4),
        "unconstrained",
    ),
]


# ------------------------------------------------------------ running


def run_backend(names, config, quick=False) -> dict:
    from benchmarks.backend import BACKEND, describe
    from benchmarks.timing import error_record, time_group

    device = describe()
    out = {}
    for comparison in COMPARISONS:
        if comparison.name not in names or BACKEND not in comparison.backends:
            continue
        print(f"{BACKEND}: {comparison.name}", file=sys.stderr, flush=True)
        try:
            calls = comparison.build(comparison.quick if quick else comparison.size)
        except Exception as err:  # a contender that can not be built is a result too
            out[comparison.name] = {"error": error_record(err)["error"]}
            continue
        timed = time_group(calls, config)
        base = timed.get(comparison.baseline, {}).get("time_s")
        for result in timed.values():
            if base and "time_s" in result:
                result["ratio"] = result["time_s"] / base
        out[comparison.name] = {"question": comparison.question, "results": timed}
    device["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return {"device": device, "comparisons": out}


def merge(previous, results):
    """The comparisons not run again keep their tables, each with the run that made it."""
    merged = dict(previous)
    for backend, result in results.items():
        old = previous.get(backend)
        if old is None:
            merged[backend] = result
            continue
        for comparison in old["comparisons"].values():
            comparison.setdefault("run", {k: old.get(k) for k in ("created", "command")})
            comparison["run"].setdefault(
                "load", [old["device"].get("load_average"), old["device"].get("load_average_end")]
            )
        comparisons = {**old["comparisons"], **result["comparisons"]}
        merged[backend] = {**result, "comparisons": comparisons}
    return merged


def markdown(data) -> str:
    from benchmarks.report import fmt_ratio, fmt_time, table

    lines = [
        "# Focused comparisons",
        "",
        "Each table is one group timed together (median of rounds in random order); "
        "`ratio` is a contender's time over the baseline's in the same group.",
        "",
    ]
    for backend, result in data["backends"].items():
        lines += [f"## {backend}", ""]
        for name, comparison in result["comparisons"].items():
            if "error" in comparison:
                lines += [f"### {name}", "", f"failed: {comparison['error']}", ""]
                continue
            run = comparison.get("run")
            if run:
                load = run["load"]
                made = f"`{' '.join(run['command'])}`, {run['created']}"
                made += f"; load average before / after: {load[0]} / {load[1]}"
            else:
                made = None
            base = next(c for c in COMPARISONS if c.name == name).baseline
            rows = []
            for label, r in comparison["results"].items():
                if "time_s" not in r:
                    rows.append([label, r.get("error", "-"), "-", "-"])
                    continue
                breaks = r.get("graph_breaks")
                rows.append(
                    [
                        label,
                        fmt_time(r["time_s"]),
                        fmt_ratio(r.get("ratio")),
                        "-" if breaks is None else str(breaks),
                    ]
                )
            head = ["contender", "time", f"ratio to {base}", "graph breaks"]
            lines += [f"### {name}", "", comparison["question"] + ".", ""]
            lines += [f"{made}.", ""] if made else []
            lines += [table(head, rows), ""]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.focus", description=__doc__.split("\n")[0]
    )
    p.add_argument("--backend", default="jax,tensorflow,torch")
    p.add_argument("--only", help="comma-separated comparison names (default: all)")
    p.add_argument("--out", type=pathlib.Path, help="folder (default: the device's results)")
    p.add_argument("--fresh", action="store_true", help="drop the other backends' results in --out")
    p.add_argument("--worker", type=pathlib.Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else [c.name for c in COMPARISONS]
    unknown = sorted(set(names) - {c.name for c in COMPARISONS})
    if unknown:
        p.error(f"unknown comparison(s) {unknown}; choose from {[c.name for c in COMPARISONS]}")
    config = Config.full()
    if args.worker:
        args.worker.write_text(json.dumps(run_backend(names, config)))
        return 0
    from benchmarks.cli import device_folder

    results = {}
    for backend in args.backend.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "focus.json"
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
            cmd = [sys.executable, "-m", "benchmarks.focus", "--worker", str(path)]
            cmd += ["--only", ",".join(names)]
            subprocess.run(cmd, env=env, cwd=ROOT.parent, check=False)
            if path.exists():
                results[backend] = json.loads(path.read_text())
            else:
                print(f"{backend}: the worker failed", file=sys.stderr)
    if not results:
        return 1
    out = args.out or ROOT / "results" / device_folder(results)
    out.mkdir(parents=True, exist_ok=True)
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    command = ["python", "-m", "benchmarks.focus", *(argv or sys.argv[1:])]
    for result in results.values():
        load = [result["device"].get(k) for k in ("load_average", "load_average_end")]
        run = {"created": created, "command": command, "load": load}
        for comparison in result["comparisons"].values():
            comparison["run"] = run
    data = {"backends": results}
    previous = out / "focus.json"
    if previous.exists() and not args.fresh:
        data["backends"] = merge(json.loads(previous.read_text())["backends"], results)
    (out / "focus.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "focus.md").write_text(markdown(data))
    print(f"results in {out}", file=sys.stderr)
    return 0 if len(results) == len(args.backend.split(",")) else 1


if __name__ == "__main__":
    sys.exit(main())
