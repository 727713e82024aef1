"""Benchmarks of kconstraints against a copy, against the alternatives, and inside train steps.

Run `python -m benchmarks --help` from the repository root. `cases.py` is
the registry of what is timed; `backend.py` holds every backend-specific
line that only the benchmarks need, and takes the rest (compiling, graph
breaks, devices) from `tests/backend.py`, shared with the test suite.
`test_harness.py` tests the harness (`nox -s bench_smoke`).
"""
