"""Wall-clock timing of compiled calls, taken in rounds so that drift hits every contender."""

from __future__ import annotations

import math
import random
import statistics
import time

from benchmarks.backend import BACKEND, graph_break_count, group_scope, sync


def error_record(err) -> dict:
    """What a result holds for a contender that failed: the error, not a time."""
    return {"error": f"{type(err).__name__}: {err}"[:500]}


# A call this slow (seconds) is timed in at most SLOW_ROUNDS rounds after one
# warm-up call: its own length already averages out short disturbances.
SLOW = 0.5
SLOW_ROUNDS = 3


def time_group(calls: dict, config, on_step=None) -> dict:
    """Median seconds per call of each zero-argument callable in `calls`.

    Each callable runs once to compile (timed apart), `config.warmup` more
    times, then `config.repeats` rounds in which every callable in turn runs
    as many calls as fill `config.min_time` seconds, the device synchronised
    before the clock is read. Timing the contenders round by round, rather
    than one after the other, spreads any change in the machine's load
    (other processes, clock boost) over all of them instead of biasing one.
    Calls longer than `SLOW` seconds get one warm-up call and at most
    `SLOW_ROUNDS` rounds.

    Each round runs the contenders in a new (seeded) random order, and before
    each timed batch of a fast contender one untimed call: the first call
    after another contender pays for what that one left behind (measured on
    JAX, CPU: a 1e8-entry copy took 215 ms in rounds that followed a sort of
    1e8 entries, 108 ms in the others, as freed memory is mapped again), and
    a fixed order would always charge the same contender.

    On torch the group starts from an empty Dynamo cache (`group_scope`), and
    each result records the graph breaks its compile met (`graph_break_count`):
    the code between them runs as Python.

    A callable that raises is left out of the rounds, its error recorded.
    `on_step()` is called after each compile and after each round.
    """
    with group_scope():
        return _time_group(calls, config, on_step or (lambda: None))


def _time_group(calls, config, on_step):
    results, number, rounds, breaks, slow_keys = {}, {}, {}, {}, set()
    for key, call in calls.items():
        try:
            seen = graph_break_count()
            start = time.perf_counter()
            sync(call())
            compile_s = time.perf_counter() - start
            if BACKEND == "torch":  # JAX and TensorFlow trace whole or fail
                breaks[key] = graph_break_count() - seen
            sync(call())
            number[key], best = calibrate(call, config.min_time)
            # The fastest of a few calls decides: one call that another
            # process delayed must not cut a fast contender's rounds.
            slow = best >= SLOW
            for _ in range(0 if slow else config.warmup - 1):
                sync(call())
        except Exception as err:  # an alternative that fails to compile is a result too
            results[key] = error_record(err)
            on_step()
            continue
        rounds[key] = min(config.repeats, SLOW_ROUNDS) if slow else config.repeats
        if slow:
            slow_keys.add(key)
        results[key] = {"compile_s": compile_s, "number": number[key], "times_s": []}
        if key in breaks:
            results[key]["graph_breaks"] = breaks[key]
        on_step()
    order = list(number)
    shuffle = random.Random(0).shuffle
    for r in range(config.repeats):
        shuffle(order)
        for key in order:
            n = number[key]
            if r >= rounds[key]:
                continue
            call = calls[key]
            if key not in slow_keys:
                sync(call())  # untimed: absorbs what the previous contender left behind
            start = time.perf_counter()
            for _ in range(n):
                out = call()
            sync(out)
            results[key]["times_s"].append((time.perf_counter() - start) / n)
        on_step()
    for key in number:
        results[key]["time_s"] = statistics.median(results[key]["times_s"])
    return results


def calibrate(call, min_time, trials=3):
    """How many calls fill `min_time` seconds, and the fastest of a few single calls.

    The fastest, because one call slowed down by another process would
    otherwise leave `number` at 1, and a lone synchronised call measures
    latency where a run of calls measures throughput.
    """
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        sync(call())
        best = min(best, time.perf_counter() - start)
        if best >= min_time:
            break
    return max(1, min(2**20, math.ceil(min_time / max(best, 1e-9)))), best
