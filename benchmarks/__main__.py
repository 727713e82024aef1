"""`python -m benchmarks`: pytest-benchmark on every backend, one process each, then the results page.

Keras fixes its backend at import, so each backend runs
`pytest benchmarks/bench_constraints.py` in a process of its own with
`KERAS_BACKEND` set; pytest-benchmark writes `<backend>.json` into the
results folder (other backends' files there are kept), and `report.write`
redraws `README.md` and the plots from every file in it. Arguments after
`--` go to pytest (`-k`, `--benchmark-compare`, `--benchmark-autosave`, ...).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from benchmarks import OPTIONS

ROOT = pathlib.Path(__file__).resolve().parent
BACKENDS = ("jax", "tensorflow", "torch")
PYTEST = ["-q", "-p", "no:cacheprovider", "--benchmark-columns=median,iqr,rounds,iterations"]
# pytest-benchmark's rounds: at least `min-rounds`, more while under `max-time`
# seconds per contender, each of at least `min-time`. A quick run only checks the harness.
TIMING = {
    "full": ["--benchmark-min-rounds=7", "--benchmark-max-time=1.0", "--benchmark-min-time=0.005"],
    "quick": ["--benchmark-min-rounds=3", "--benchmark-max-time=0.02", "--bench-quick"],
}


def parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run, into build/bench-quick/")
    p.add_argument("--backend", help="comma-separated backends (default: every one installed)")
    for name, text in OPTIONS.items():
        p.add_argument(f"--{name}", help=text)
    p.add_argument("--out", type=pathlib.Path, help="results folder (default: by device)")
    p.add_argument("pytest_args", nargs="*", help="after --: arguments to pytest")
    return p


def run_backend(backend, args, json_path):
    """pytest-benchmark on one backend; its exit status (1 when some contender failed)."""
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "bench_constraints.py"), *PYTEST]
    cmd += [f"--benchmark-json={json_path}", *TIMING["quick" if args.quick else "full"]]
    values = {name: getattr(args, name.replace("-", "_")) for name in OPTIONS}
    cmd += [f"--bench-{name}={value}" for name, value in values.items() if value is not None]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*cmd, *args.pytest_args], env=env, cwd=ROOT.parent).returncode


def main(argv=None):
    args = parser().parse_args(argv)
    installed = [b for b in BACKENDS if importlib.util.find_spec(b)]
    backends = args.backend.split(",") if args.backend else installed
    if set(backends) - set(BACKENDS):
        parser().error(f"unknown backend in {backends}; choose from {list(BACKENDS)}")
    from benchmarks import report

    base = ROOT.parent / "build" / "bench-quick" if args.quick else ROOT / "results"
    failed = []
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / f"{backend}.json"
            status = run_backend(backend, args, path)
            if not path.exists():  # pytest did not get to the end
                failed.append(f"{backend} (pytest exited with {status}, no results)")
                continue
            if status:
                failed.append(f"{backend} (some contenders failed: see the Errors table)")
            run = json.loads(path.read_text())
            for b in run["benchmarks"]:  # the statistics, not each round's time (1.4 MB a run)
                b["stats"].pop("data", None)
            out = args.out or base / report.device_folder(run)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{backend}.json").write_text(json.dumps(run, indent=4) + "\n")
        report.write(out)  # after each backend: a stopped run keeps what it timed
        print(f"results in {out}", file=sys.stderr)
    if failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
