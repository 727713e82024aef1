"""The benchmarks: every constraint has a case, each case times what it claims, --quick works."""

import collections
import itertools
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import kconstraints as kc
from benchmarks import report, timing
from benchmarks.cases import CASES, twins_for
from benchmarks.config import Config
from benchmarks.worker import run_backend
from tests.helpers import BACKEND, sample, tensor, to_np

# Keras traces its dtype lattice (an lru_cache) inside torch.compile.
pytestmark = pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")

# Dense kernels (input_dim, units), tall and square, and a Conv2D kernel.
SHAPES = {"dense": (6, 5), "square": (5, 5), "conv2d": (3, 3, 4, 4)}


def exported_constraints():
    return sorted(
        name
        for name in kc.__all__
        if isinstance(getattr(kc, name), type)
        and issubclass(getattr(kc, name), kc.Constraint)
        and name != "Constraint"
    )


def test_every_exported_constraint_has_a_case():
    missing = set(exported_constraints()) - {c.name for c in CASES}
    assert not missing, f"add a Case to benchmarks/cases.py for {sorted(missing)}"


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_and_its_twins_project_onto_the_same_set(case, shape):
    """A comparison is fair only if both sides compute the same projection."""
    constraint = case.make(shape)
    if constraint is None:
        # Only square-matrix constraints (Symmetric, PSD) leave a kernel free.
        assert case.family == "matrix" and shape[-1] != shape[-2], (case.name, shape)
        return
    assert case.name.partition("[")[0] == type(constraint).__name__
    w = tensor(sample(shape, seed=3) * 2)
    expected = to_np(constraint(w))
    assert expected.shape == shape
    twins = [t for t in twins_for(case, BACKEND) if t.make is not None]
    for twin in twins:
        got = to_np(twin.make(shape)(w))
        # Keras divides by `norm + 1e-7`: equal up to that epsilon.
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=twin.name)


def test_rounds_shuffle_the_contenders_and_warm_each_fast_one(monkeypatch):
    """Every round in a new order, an untimed call before each fast batch, slow ones capped."""
    monkeypatch.setattr(timing, "SLOW", 0.01)
    log, marks = [], []

    def contender(name, seconds=0.0):
        def call():
            log.append(name)
            time.sleep(seconds)

        return call

    calls = {name: contender(name) for name in "abcde"}
    calls["slow"] = contender("slow", 0.02)
    config = Config.quick_preset(repeats=5, warmup=1, min_time=0.0)
    out = timing.time_group(calls, config, on_step=lambda: marks.append(len(log)))
    assert {k: len(r["times_s"]) for k, r in out.items()} == {
        **dict.fromkeys("abcde", 5),
        "slow": 3,
    }
    bounds = marks[len(calls) - 1 :]  # after the last compile step, one mark per round
    rounds = [log[i:j] for i, j in itertools.pairwise(bounds)]
    assert len(rounds) == 5
    for r, names in enumerate(rounds):
        # min_time=0: one timed call each, after one untimed call; the slow one alone.
        expected = {**dict.fromkeys("abcde", 2), **({"slow": 1} if r < 3 else {})}
        assert collections.Counter(names) == expected
    orders = {tuple(dict.fromkeys(names)) for names in rounds}
    assert len(orders) > 1


def check_result(result, cases):
    device = result["device"]
    assert device["backend"] == BACKEND
    assert device["array_device"] and device["packages"]["keras"]
    projection = result["projection"]
    assert not [r for r in projection if "error" in r], projection
    timed = {(r["case"], r["impl"]) for r in projection}
    assert ("copy", "copy") in timed
    assert {(c, "kconstraints") for c in cases} <= timed
    for r in projection:
        assert r["time_s"] > 0 and len(r["times_s"]) == 3
        assert r["ratio_to_copy"] > 0 and r["bandwidth_gbs"] > 0
        # torch counts the graph breaks of each compile; kconstraints has none.
        assert ("graph_breaks" in r) == (BACKEND == "torch")
        assert r.get("graph_breaks", 0) == 0 or r["impl"] != "kconstraints", r
    train = result["train_step"]
    assert {(r["model"], r["case"]) for r in train} == {
        ("mlp", "unconstrained"),
        *(("mlp", c) for c in cases),
    }
    assert all(r["time_s"] > 0 and "overhead" in r for r in train), train


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """One in-process --quick run on the active backend, and its report folder."""
    config = Config.quick_preset(cases=("MaxNorm",), train_models=("mlp",), train_twins=False)
    result = run_backend(config)
    out = tmp_path_factory.mktemp("bench")
    report.write(out, {BACKEND: result}, command=["test"])
    return result, out


def test_quick_run_times_every_part(quick_report):
    result, _ = quick_report
    check_result(result, ["MaxNorm"])


def test_quick_run_writes_json_and_markdown(quick_report):
    result, out = quick_report
    data = json.loads((out / "results.json").read_text())
    assert data["backends"][BACKEND]["projection"] == result["projection"]
    text = (out / "README.md").read_text()
    for heading in ("## Devices", "## Headline", "## Targets", f"## Projection time: {BACKEND}"):
        assert heading in text
    assert "keras.constraints.MaxNorm" in text and "kconstraints.MaxNorm" in text


def test_readme_headline_is_one_row_per_constraint(quick_report, capsys):
    _, out = quick_report
    report.main([str(out), "--readme"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| constraint | size (") and "mlp train step" in lines[0]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| MaxNorm"]


def test_quick_run_draws_plots(quick_report):
    pytest.importorskip("matplotlib", reason="the plots need matplotlib (the test group has it)")
    _, out = quick_report
    text = (out / "README.md").read_text()
    for png in ("projection.png", "train-step.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_command_line_quick_run_merges_into_its_folder(tmp_path):
    """`python -m benchmarks --quick` as nox runs it: a worker per backend, then the report."""
    (tmp_path / "results.json").write_text(json.dumps({"backends": {"other": {"error": "kept"}}}))
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--backend", BACKEND]
    cmd += ["--cases", "NonNeg", "--no-train", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["backends"]) == {BACKEND, "other"}
    assert data["backends"][BACKEND]["config"]["quick"] is True
    assert {r["case"] for r in data["backends"][BACKEND]["projection"]} == {"copy", "NonNeg"}
    assert "kept" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize(
    "before, after, busy",
    [(1.1, 2.1, False), (0.5, 3.9, False), (2.5, 2.0, True), (1.0, 4.5, True)],
)
def test_oversubscribed_discounts_the_benchmarks_own_threads(before, after, busy):
    device = {"cpu_count": 2, "load_average": [before], "load_average_end": [after]}
    assert report.oversubscribed({"device": device}) is busy
