"""`python -m kconstraints.testing MODULE:NAME --shape 64,32`: check a constraint under each backend.

Each backend runs in a process of its own (Keras picks its backend once per
process), checking one property at a time so that a failure does not hide
the rest. The result is a Markdown table, property by backend, then each
failure's message with its smallest input; the exit status is 1 when any
property failed on any backend.

NAME is a constraint instance, a class (built with its defaults), a
`per_shape(make)` factory, a function of the weight, or a function of no
argument that returns one of these.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys

BACKENDS = ("jax", "tensorflow", "torch")


def load(spec):
    """The object `MODULE:NAME` names (the current folder is importable)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"expected MODULE:NAME, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module), name)


def constraint_of(obj):
    """A class becomes its default instance, a function of no argument its result."""
    from kconstraints.testing import per_shape

    if isinstance(obj, type):
        return obj()
    if isinstance(obj, per_shape) or not inspect.isfunction(obj):
        return obj
    required = [
        p
        for p in inspect.signature(obj).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return obj() if not required else obj


def arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m kconstraints.testing",
        description="Check a constraint's properties under each Keras backend.",
    )
    parser.add_argument("constraint", help="MODULE:NAME of the constraint (see the module's doc)")
    parser.add_argument("--shape", required=True, help="the weight shape, e.g. 64,32")
    parser.add_argument(
        "--backends",
        default=",".join(b for b in BACKENDS if importlib.util.find_spec(b) is not None),
        help="comma-separated backends (default: those installed)",
    )
    parser.add_argument("--examples", type=int, default=20, help="generated inputs per dtype")
    parser.add_argument("--reference", help="MODULE:FN, reference(w) -> P(w) in float64 NumPy")
    parser.add_argument("--feasible", help="MODULE:FN, feasible(p, tol) -> bool")
    parser.add_argument("--convex", action="store_true", help="the set is convex")
    parser.add_argument("--dtypes", help="comma-separated dtypes (default: all four)")
    parser.add_argument("--properties", help="comma-separated properties (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.shape = tuple(int(n) for n in args.shape.split(",") if n.strip())
    except ValueError:
        parser.error(f"--shape: expected integers separated by commas, got {args.shape!r}")
    return args


def _split(text):
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def worker(args):
    """Check each property on this process's backend; print one JSON object per property."""
    from kconstraints.testing import DTYPES, PROPERTIES, check_constraint

    constraint = constraint_of(load(args.constraint))
    options = {
        "reference": load(args.reference) if args.reference else None,
        "feasible": load(args.feasible) if args.feasible else None,
        "convex": args.convex,
        "dtypes": _split(args.dtypes) or DTYPES,
        "examples": args.examples,
        "seed": args.seed,
    }
    for name in _split(args.properties) or tuple(PROPERTIES):
        try:
            report = check_constraint(constraint, args.shape, properties=[name], **options)
        except AssertionError as failure:
            result = {"property": name, "status": "failed", "message": str(failure)}
        else:
            if name in report.inputs:
                result = {"property": name, "status": "ok", "inputs": report.inputs[name]}
            else:
                result = {"property": name, "status": "skipped", "why": report.skipped[name]}
        print(json.dumps(result), flush=True)


def run_backend(args, backend, argv):
    """The worker's results under `backend`, or one error entry when it did not run."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "kconstraints.testing", *argv, "--worker"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["property"]] = entry
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        results["(run)"] = {"status": "failed", "message": f"the {backend} process failed: {tail}"}
    return results


def cell(entry):
    if entry is None:
        return "not run"
    if entry["status"] == "ok":
        return f"ok ({entry['inputs']})"
    if entry["status"] == "skipped":
        return f"n/a: {entry['why']}"
    return "**failed**"


def table(results):
    """The Markdown table, property by backend, and the failures' messages below it."""
    backends = list(results)
    names = list(dict.fromkeys(p for r in results.values() for p in r))
    lines = ["| property | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
    for name in names:
        row = [cell(results[b].get(name)) for b in backends]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    failures = [
        (b, entry["message"])
        for b in backends
        for entry in results[b].values()
        if entry["status"] == "failed"
    ]
    for backend, message in failures:
        lines += ["", f"{backend}: {message}"]
    return "\n".join(lines), bool(failures)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(argv)
    if args.worker:
        worker(args)
        return 0
    backends = _split(args.backends) or ()
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"--backends: each must be one of {list(BACKENDS)}, got {unknown}")
    results = {b: run_backend(args, b, argv) for b in backends}
    if not results:
        raise SystemExit("--backends: none given, and no backend is installed")
    text, failed = table(results)
    print(f"{args.constraint}, shape {args.shape}:\n\n{text}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
