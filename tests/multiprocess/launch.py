"""Start the processes of one engine's run on 127.0.0.1, each bounded in time and killed on failure.

The two ranks and the single-process reference start together, each in a
process group of its own. The ports are the ones the OS hands out for port
0 at that moment, so parallel runs on one machine do not collide. When one
process fails or the time runs out, every process group still running is
killed (a rank whose peer died would wait for it forever), and the error
shows the end of each one's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from tests.multiprocess.worker import files

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Seconds for all three processes together; on 2 CPU cores a run takes 10 to
# 40 s, most of it importing the backend and compiling.
TIMEOUT = 300
WORLD = 2
# Each engine on CPUs only, whatever the machine has: JAX with one CPU
# device per process (a flag left by `nox -s distributed` would give it 8).
ENGINE_ENV = {
    "jax": {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
    "torch": {"CUDA_VISIBLE_DEVICES": ""},
    "tensorflow": {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
}


def free_ports(n):
    """`n` distinct TCP ports of 127.0.0.1 that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _tail(path, lines=40):
    text = path.read_text(errors="replace").splitlines() if path.exists() else ["(no log)"]
    return "\n".join(text[-lines:])


def _kill(process):
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start_and_wait(commands, out, env, timeout):
    """Run every command of `{name: argv}` at once; raise with their logs unless all exit 0 in time."""
    processes, logs = {}, {}
    try:
        for name, argv in commands.items():
            logs[name] = out / f"{name}.log"
            with logs[name].open("w") as log:
                processes[name] = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed whole
                )
        deadline = time.monotonic() + timeout
        while True:
            codes = {name: p.poll() for name, p in processes.items()}
            failed = {name: c for name, c in codes.items() if c not in (None, 0)}
            if failed or all(c == 0 for c in codes.values()):
                break
            if time.monotonic() > deadline:
                failed = {name: "timed out" for name, c in codes.items() if c is None}
                break
            time.sleep(0.1)
    finally:
        for p in processes.values():
            _kill(p)
    if failed:
        report = [
            f"--- {name} ({codes[name]}): {logs[name]}\n{_tail(logs[name])}" for name in processes
        ]
        raise AssertionError(f"{failed} after at most {timeout} s\n" + "\n".join(report))


def run(engine, out, timeout=TIMEOUT):
    """Train with `engine` on WORLD processes and on one; the weights and records of each.

    Returns `{(world, rank): {"weights": {mode: {path: array}}, "info": {...}}}`.
    """
    out = pathlib.Path(out)
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(WORLD))
    worker = [sys.executable, "-m", "tests.multiprocess.worker", engine, "--out", str(out)]
    commands = {"single": [*worker, "--world", "1", "--rank", "0"]}
    for rank in range(WORLD):
        commands[f"rank{rank}"] = [*worker, "--world", str(WORLD), "--rank", str(rank)]
        commands[f"rank{rank}"] += ["--addresses", addresses]
    env = {**os.environ, "KERAS_BACKEND": engine, **ENGINE_ENV[engine]}
    if engine == "torch" and "lo" in {name for _, name in socket.if_nameindex()}:
        # gloo's own connections on the loopback too, not only the rendezvous.
        env["GLOO_SOCKET_IFNAME"] = "lo"
    start_and_wait(commands, out, env, timeout)
    results = {}
    for world, rank in [(1, 0), *((WORLD, r) for r in range(WORLD))]:
        npz, seen = files(out, engine, world, rank)
        weights = {}
        with np.load(npz) as saved:
            for key in saved.files:
                mode, path = key.split("|", 1)
                weights.setdefault(mode, {})[path] = saved[key].astype("float64")
        results[world, rank] = {"weights": weights, "info": json.loads(seen.read_text())}
    return results
