"""pytest options of the benchmark run, and what it adds to pytest-benchmark's JSON.

pytest-benchmark times, calibrates and stores; these hooks add the device,
the run's settings and the contenders that failed (a failed test has no
timing in pytest-benchmark's JSON) under the key `kconstraints`.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import OPTIONS

ERRORS = []
# The load average when the run starts: pytest-benchmark asks for machine_info at its end.
START_LOAD = []


def pytest_addoption(parser):
    group = parser.getgroup("kconstraints benchmarks")
    group.addoption("--bench-quick", action="store_true", help="CI-sized sizes and models")
    for name, text in OPTIONS.items():
        group.addoption(f"--bench-{name}", help=text)


def pytest_configure(config):
    START_LOAD[:] = [round(v, 2) for v in os.getloadavg()]
    # "Not saving anything, no benchmarks have been run": a run that timed nothing says so itself.
    config.addinivalue_line(
        "filterwarnings", "ignore::pytest_benchmark.logger.PytestBenchmarkWarning"
    )
    # Before pytest-benchmark's own (trylast) reads it: the timer that syncs the device.
    if config.getoption("benchmark_timer", None) == "time.perf_counter":
        config.option.benchmark_timer = "benchmarks.backend.clock"


def pytest_benchmark_update_machine_info(config, machine_info):
    from benchmarks.backend import describe

    machine_info["kconstraints"] = {**describe(), "load_average": START_LOAD}


def pytest_benchmark_update_json(config, benchmarks, output_json):
    from benchmarks.backend import BACKEND, on_gpu
    from benchmarks.bench_constraints import settings
    from benchmarks.cases import select

    s = settings(config)
    limits = {c.name: c.limit(BACKEND, on_gpu()) for c in select(s.cases)}
    output_json["kconstraints"] = {
        "settings": s.to_json(),
        "limits": {name: limit for name, limit in limits.items() if limit},
        "errors": list(ERRORS),
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    contender = getattr(item, "callspec", None) and item.callspec.params.get("contender")
    if contender is not None and report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash else str(report.longrepr)
        ERRORS.append({**contender.meta(), "error": message[:500]})
    return report
