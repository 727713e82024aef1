"""Benchmarks of kconstraints against a copy, against other libraries, and inside train steps.

pytest-benchmark does the timing, rounds and JSON storage
(`bench_constraints.py`, run per backend by `python -m benchmarks`);
`cases.py` makes a case of every registry variant; `backend.py` holds the
per-backend synchronisation and compile scope; `report.py` writes the
results page. `test_harness.py` tests the harness (`nox -s bench_smoke`).
"""

# The run's options: `--NAME` of `python -m benchmarks`, passed on to pytest as `--bench-NAME`.
OPTIONS = {
    "cases": "comma-separated registry variants, e.g. Simplex,SpectralNorm[gram] (default: all)",
    "sizes": "weight sizes, e.g. 1e4,1e6",
    "matrix-sizes": "square kernel sides, e.g. 256,1024",
    "models": "train-step models: mlp,cnn (default), or none",
    "train-cases": "variants timed in train steps (default: all of the run)",
}
