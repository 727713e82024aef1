"""One backend's run, in the process whose Keras backend it is."""

from __future__ import annotations

import datetime
import os
import sys
import time

from benchmarks import projection, train_step
from benchmarks.backend import BACKEND, describe
from benchmarks.cases import select


class _Quiet:
    """Stands in for tqdm when it is not installed: no bar, same interface."""

    def __init__(self, total, desc):
        self.n, self.total, self.desc = 0, total, desc

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, text):
        print(f"{self.desc}: {self.n}/{self.total} {text}", file=sys.stderr, flush=True)

    def close(self):
        pass


def progress_bar(total, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Quiet(total, desc)
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


def run_backend(config) -> dict:
    """Every benchmark `config` asks for, on the current Keras backend."""
    cases = select(config.cases)
    if config.train_cases is not None:
        select(config.train_cases)  # unknown names are an error, not an empty run
    device = describe()
    parts = [m for m, on in ((projection, config.projection), (train_step, config.train)) if on]
    bar = progress_bar(sum(m.steps(config, cases) for m in parts), device["backend"])
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    result = {"projection": [], "train_step": []}
    try:
        for module in parts:
            result[module.__name__.rsplit(".", 1)[1]] = module.run(config, cases, bar)
    finally:
        bar.close()
    device["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return {
        "device": device,
        "config": config.to_json(),
        "cases": [
            {
                "name": c.name,
                "family": c.family,
                "max_size": c.limit(BACKEND, device["kind"] == "gpu"),
                "parity": c.parity,
            }
            for c in cases
        ],
        "started": started,
        "seconds": round(time.perf_counter() - start, 1),
        **result,
    }
