"""Projection cost: one compiled call of each constraint against a copy of the same array.

The copy (`2 * w`, which no compiler can elide) reads and writes every
entry once, so its time is the memory-bandwidth floor of any projection.
Not `-w`: XLA's CPU backend (JAX and TensorFlow) runs a negation several
times slower than a multiplication (measured: 1.5 ms against 0.16 ms for a
1e6-entry float32 array on one thread), which would flatter every ratio.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.backend import BACKEND, compile_fn, on_gpu, to_device
from benchmarks.cases import twins_for
from benchmarks.timing import time_group

COPY = ("copy", "copy")


def kernel_shape(size):
    """A near-square Dense kernel `(input_dim, units)` of about `size` entries."""
    rows = math.isqrt(size)
    return (rows, size // rows)


def fits(case, size):
    limit = case.limit(BACKEND, on_gpu())
    return limit is None or size <= limit


def groups(config, cases):
    """(shape, [(case, impl, impl_name, make)]) for every weight shape timed."""
    out = []
    plain = [c for c in cases if c.family != "matrix"]
    for size in config.sizes:
        cap = config.max_reduction_size
        chosen = [c for c in plain if c.family == "elementwise" or cap is None or size <= cap]
        chosen = [c for c in chosen if fits(c, size)]
        out.append((kernel_shape(size), chosen))
    square = [c for c in cases if c.family == "matrix"]
    for n in config.matrix_sizes:
        chosen = [c for c in square if fits(c, n * n)]
        if chosen:
            out.append(((n, n), chosen))
    contenders = []
    for shape, chosen in out:
        row = []
        for case in chosen:
            row.append((case, "kconstraints", f"kconstraints.{case.name}", case.make))
            row.extend(
                (case, t.library, t.name, t.make) for t in twins_for(case, BACKEND) if t.make
            )
        contenders.append((shape, row))
    return contenders


def run(config, cases, progress):
    """Time every case and twin at every shape; return one record per timing."""
    records = []
    plan = groups(config, cases)
    rng = np.random.default_rng(0)
    for shape, row in plan:
        w = to_device(rng.normal(size=shape).astype(config.dtype))
        calls = {COPY: _compiled(lambda w: w * 2.0, w)}
        meta = {COPY: ("copy", "2 * w (copy)", "copy")}
        for case, impl, impl_name, make in row:
            key = (case.name, impl)
            fn = make(shape)
            if fn is not None:
                calls[key] = _compiled(fn, w)
                meta[key] = (case.name, impl_name, case.family)
        progress.set_postfix_str(f"projection {shape}")
        timed = time_group(calls, config, progress.update)
        copy_s = timed[COPY].get("time_s")
        size = math.prod(shape)
        nbytes = 2 * size * np.dtype(config.dtype).itemsize
        for key, result in timed.items():
            case_name, impl_name, family = meta[key]
            record = {
                "case": case_name,
                "impl": key[1],
                "impl_name": impl_name,
                "family": family,
                "shape": list(shape),
                "size": size,
                "dtype": config.dtype,
                **result,
            }
            if "time_s" in result:
                record["bandwidth_gbs"] = nbytes / result["time_s"] / 1e9
                if copy_s:
                    record["ratio_to_copy"] = result["time_s"] / copy_s
            records.append(record)
    return records


def steps(config, cases):
    """How many progress steps `run` takes: a compile and `repeats` rounds per group."""
    plan = groups(config, cases)
    return sum(len(row) + 1 + config.repeats for _, row in plan)


def _compiled(fn, w):
    compiled = compile_fn(fn)
    return lambda: compiled(w)
