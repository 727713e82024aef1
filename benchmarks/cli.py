"""`python -m benchmarks`: run every backend in its own process, then write the report.

Keras fixes its backend at import, so the parent (which imports no backend)
starts one worker per backend with `KERAS_BACKEND` set, collects their JSON,
merges it with the results already in the output folder, and writes
`results.json`, `README.md` (the tables) and the PNG plots there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

from benchmarks.config import Config, thread_env

ROOT = pathlib.Path(__file__).resolve().parent
MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}


def installed_backends():
    return [b for b, module in MODULES.items() if importlib.util.find_spec(module)]


def _ints(text):
    return tuple(int(float(v)) for v in text.split(","))


def _names(text):
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized smoke run (a minute or two per backend on a CPU)",
    )
    p.add_argument(
        "--backend",
        type=_names,
        default=None,
        help="comma-separated backends (default: every one installed)",
    )
    p.add_argument("--cases", type=_names, help="comma-separated case names (default: all)")
    p.add_argument("--sizes", type=_ints, help="weight sizes, e.g. 1e4,1e6")
    p.add_argument("--matrix-sizes", type=_ints, help="square kernel sides, e.g. 256,1024")
    p.add_argument(
        "--max-reduction-size",
        type=lambda v: int(float(v)),
        help="largest size for constraints that are not elementwise",
    )
    p.add_argument("--repeats", type=int, help="timed rounds; the median is reported")
    p.add_argument("--min-time", type=float, help="seconds each timed round lasts at least")
    p.add_argument("--train-models", type=_names, help="mlp,cnn (default both)")
    p.add_argument("--train-cases", type=_names, help="cases timed in train steps (default all)")
    p.add_argument("--no-projection", action="store_true", help="skip the projection benchmark")
    p.add_argument("--no-train", action="store_true", help="skip the train-step benchmark")
    p.add_argument(
        "--no-train-twins", action="store_true", help="time only kconstraints in train steps"
    )
    p.add_argument("--threads", type=int, help="CPU threads per backend (default: theirs)")
    p.add_argument("--out", type=pathlib.Path, help="output folder (default: by device)")
    p.add_argument("--fresh", action="store_true", help="do not merge with results in --out")
    p.add_argument("--worker", type=pathlib.Path, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    return p


def config_from(args) -> Config:
    overrides = {
        "cases": args.cases,
        "sizes": args.sizes,
        "matrix_sizes": args.matrix_sizes,
        "max_reduction_size": args.max_reduction_size,
        "repeats": args.repeats,
        "min_time": args.min_time,
        "train_models": args.train_models,
        "train_cases": args.train_cases,
        "threads": args.threads,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides["projection"] = not args.no_projection
    overrides["train"] = not args.no_train
    overrides["train_twins"] = not args.no_train_twins
    return (Config.quick_preset if args.quick else Config.full)(**overrides)


def run_worker(backend, config, log=sys.stderr):
    """Run one backend in a child process; its result, or {'error': ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "result.json"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.update(thread_env(config.threads))
        cmd = [sys.executable, "-m", "benchmarks", "--worker", str(out)]
        cmd += ["--config", json.dumps(config.to_json())]
        proc = subprocess.run(cmd, env=env, cwd=ROOT.parent, stdout=log, stderr=log)
        if proc.returncode != 0 or not out.exists():
            return {"error": f"worker for {backend} exited with status {proc.returncode}"}
        return json.loads(out.read_text())


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_folder(backends: dict) -> str:
    """`gpu-nvidia-h100-80gb-hbm3` or `cpu-amd-epyc-2cores`: where results go."""
    devices = [r["device"] for r in backends.values() if "device" in r]
    gpus = [d for d in devices if d["kind"] == "gpu"]
    if gpus:
        return "gpu-" + slug(gpus[0]["name"])
    if devices:
        return f"cpu-{slug(devices[0]['cpu'])}-{devices[0]['cpu_count']}cores"
    return "unknown"


def main(argv=None):
    args = parser().parse_args(argv)
    if args.worker:
        from benchmarks.worker import run_backend

        config = Config.from_json(json.loads(args.config))
        args.worker.write_text(json.dumps(run_backend(config)))
        return 0

    from benchmarks import report

    config = config_from(args)
    backends = args.backend or installed_backends()
    unknown = sorted(set(backends) - set(MODULES))
    if unknown:
        parser().error(f"unknown backend(s) {unknown}; choose from {sorted(MODULES)}")
    base = ROOT.parent / "build" / "bench-quick" if config.quick else ROOT / "results"
    command = ["python", "-m", "benchmarks"] + (argv or sys.argv[1:])
    results, out, written = {}, args.out, set()
    for backend in backends:
        results[backend] = run_worker(backend, config)
        # The folder is named after the first backend that ran; results are
        # written as each backend finishes, so a stopped run keeps its work.
        if out is None and "error" not in results[backend]:
            out = base / device_folder(results)
        if out is not None:
            new = {b: r for b, r in results.items() if b not in written}
            report.write(out, new, merge=bool(written) or not args.fresh, command=command)
            written.update(new)
    if out is None:  # every backend failed
        out = base / device_folder(results)
        report.write(out, results, merge=not args.fresh, command=command)
    failed = [b for b, r in results.items() if "error" in r]
    print(f"results in {out}", file=sys.stderr)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0
