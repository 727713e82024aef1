"""Benchmarks of kconstraints against a copy, against other libraries, and inside train steps.

pytest-benchmark does the timing, rounds and JSON storage
(`bench_constraints.py`, run per backend by `python -m benchmarks`);
`cases.py` makes a case of every registry variant; `backend.py` holds the
per-backend synchronisation and compile scope; `report.py` writes the
results page. `test_harness.py` tests the harness (`nox -s bench_smoke`).
"""
