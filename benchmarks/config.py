"""What one benchmark run measures, and the facts about the host it records.

This module imports no backend, so the parent process that starts one worker
per backend can use it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform

# Distributions whose versions a result records when they are installed.
PACKAGES = (
    "kconstraints",
    "keras",
    "numpy",
    "jax",
    "jaxlib",
    "jax-cuda12-plugin",
    "jax-cuda13-plugin",
    "tensorflow",
    "tensorflow-cpu",
    "torch",
    "optax",
    "matplotlib",
    "tqdm",
)


@dataclasses.dataclass
class Config:
    """One run's settings; `Config.full()` and `Config.quick_preset()` are the two presets."""

    quick: bool = False
    # Weight sizes (elements) of the projection benchmark; each is laid out as
    # a near-square Dense kernel (input_dim, units).
    sizes: tuple = (10**4, 10**5, 10**6, 10**7, 10**8)
    # Constraints that reduce (norms, sorts, means) skip sizes above this;
    # `None` runs them at every size. Elementwise constraints always run.
    max_reduction_size: int | None = None
    # Side lengths of the square kernels given to matrix constraints.
    matrix_sizes: tuple = (256, 512, 1024, 2048, 4096)
    dtype: str = "float32"
    # Each timing: `warmup` calls after the compiling one, then `repeats`
    # rounds of as many calls as fill `min_time` seconds; the median counts.
    warmup: int = 2
    repeats: int = 7
    min_time: float = 0.05
    # Case names to run (None: all), and which parts.
    cases: tuple | None = None
    projection: bool = True
    train: bool = True
    train_models: tuple = ("mlp", "cnn")
    # Case names timed in train steps (None: every case of the run).
    train_cases: tuple | None = None
    # CPU threads of every backend (None: each backend's default).
    threads: int | None = None
    # Also time the Keras / optax / torch alternatives inside train steps.
    train_twins: bool = True
    # MLP: input width, hidden widths (square kernels), classes, batch.
    mlp: tuple = (512, (512, 512), 10, 256)
    # CNN: image side, channels, filters per 3x3 conv, classes, batch.
    cnn: tuple = (32, 3, (32, 64, 64), 10, 64)

    @classmethod
    def full(cls, **overrides):
        return cls(**overrides)

    @classmethod
    def quick_preset(cls, **overrides):
        quick = dict(
            quick=True,
            sizes=(10**4,),
            matrix_sizes=(32,),
            warmup=1,
            repeats=3,
            min_time=0.002,
            mlp=(32, (32, 32), 4, 16),
            cnn=(8, 2, (4, 4), 4, 8),
            # Train steps for one case per kind of alternative (a Keras
            # constraint, optax, a torch parametrization, a Keras wrapper):
            # torch.compile takes 5-10 s per model on a CPU.
            train_cases=("NonNeg", "MaxNorm", "Simplex", "SpectralNorm"),
        )
        return cls(**{**quick, **overrides})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict):
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _tuples(v) for k, v in data.items() if k in fields})


def thread_env(threads):
    """Environment variables that hold each backend to `threads` CPU threads.

    Set before the backend is imported: OpenMP (torch, including the C++
    kernels of torch.compile), TensorFlow's thread pools, and XLA's CPU
    client (JAX). On a machine whose cores other processes also use, one
    thread avoids OpenMP's spinning threads waiting for each other.
    """
    if threads is None:
        return {}
    n = str(threads)
    xla = "--xla_cpu_multi_thread_eigen=false " if threads == 1 else ""
    return {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        "XLA_FLAGS": f"{xla}intra_op_parallelism_threads={n}",
    }


def _tuples(value):
    """JSON turns tuples into lists; the config keeps tuples (hashable, immutable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
