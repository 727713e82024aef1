"""The benchmark harness: timing rounds, a --quick run, its report and the command line.

Run by the `bench_smoke` nox session on each backend (`nox -s bench_smoke`),
not by the library's test sessions. That every constraint has a case and
that each twin computes the same projection is in `tests/test_benchmarks.py`.
"""

import collections
import itertools
import json
import pathlib
import re
import subprocess
import sys
import time

import pytest

from benchmarks import report, timing
from benchmarks.config import Config
from benchmarks.worker import run_backend
from tests.backend import BACKEND

# Keras traces its dtype lattice (an lru_cache) inside torch.compile.
pytestmark = pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}


def markdown_rows(text):
    """The cells of every Markdown table row in `text`, separator rows left out."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return [row for row in rows if set(row) != {"---"}]


def seconds(cell):
    """The time a report cell shows (`1.23 ms (1.05x)` -> 0.00123), or None."""
    match = re.match(r"([0-9.]+(?:e[+-]?[0-9]+)?) (s|ms|µs|ns)\b", cell)
    return float(match[1]) * UNITS[match[2]] if match else None


def shows(cell, value, digits=3):
    """Whether `cell` shows the time `value` to the report's 3 significant digits."""
    shown = seconds(cell)
    return shown is not None and abs(shown - value) <= 0.5 * 10 ** (1 - digits) * value


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


def test_a_contender_that_raises_is_an_error_not_a_time():
    def broken():
        raise ValueError("does not compile")

    config = Config.quick_preset(repeats=2, warmup=1, min_time=0.0)
    out = timing.time_group({"ok": lambda: None, "broken": broken}, config)
    assert out["broken"] == {"error": "ValueError: does not compile"}
    assert len(out["ok"]["times_s"]) == 2


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


def test_report_json_holds_the_run(quick_report):
    result, out = quick_report
    data = json.loads((out / "results.json").read_text())
    assert data["command"] == ["test"]
    assert data["backends"][BACKEND]["projection"] == result["projection"]
    assert data["backends"][BACKEND]["train_step"] == result["train_step"]


def test_markdown_shows_every_timing_of_the_run(quick_report):
    """Each timed (case, implementation) is a table row with its time and its ratio."""
    result, out = quick_report
    rows = markdown_rows((out / "README.md").read_text())
    for r in result["projection"]:
        # The projection table: one row per implementation, one column per size.
        row = next(row for row in rows if row[0] == r["impl_name"])
        assert any(shows(cell, r["time_s"]) for cell in row[1:]), (r["impl_name"], row)
        if r["case"] != "copy":
            assert any(f"({r['ratio_to_copy']:.2f}x)" in cell for cell in row[1:]), row
    for t in result["train_step"]:
        # The train-step table: backend, model, implementation, time, overhead (torch's
        # graph-break table also starts with the first three).
        key = [BACKEND, t["model"], t["impl_name"]]
        matches = [row for row in rows if row[:3] == key and len(row) == 5]
        assert len(matches) == 1, (t, rows)
        assert shows(matches[0][3], t["time_s"]), matches[0]
        assert abs(float(matches[0][4].rstrip("%")) - 100 * t["overhead"]) <= 0.05 + 1e-9


def test_readme_headline_is_one_row_per_constraint(quick_report, capsys):
    result, out = quick_report
    report.main([str(out), "--readme"])
    header, *rows = markdown_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["MaxNorm"]
    mlp = next(i for i, name in enumerate(header) if name.startswith("mlp train step"))
    overhead = next(
        t["overhead"]
        for t in result["train_step"]
        if (t["case"], t["impl"]) == ("MaxNorm", "kconstraints")
    )
    assert abs(float(rows[0][mlp].rstrip("%")) - 100 * overhead) <= 0.05 + 1e-9


def test_quick_run_draws_plots(quick_report):
    pytest.importorskip("matplotlib", reason="the plots need matplotlib (the bench group has it)")
    _, out = quick_report
    text = (out / "README.md").read_text()
    for png in ("projection.png", "train-step.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_command_line_quick_run_merges_into_its_folder(tmp_path):
    """`python -m benchmarks --quick` as a user runs it: a worker per backend, then the report."""
    (tmp_path / "results.json").write_text(json.dumps({"backends": {"other": {"error": "kept"}}}))
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--backend", BACKEND]
    cmd += ["--cases", "NonNeg", "--no-train", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
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


def focused_comparisons():
    """One case per comparison of `python -m benchmarks.focus`.

    The train steps compile whole models: minutes on torch on a 2-core CPU,
    so there they are `long` (`nox -s long` runs them, `nox` alone not).
    """
    from benchmarks import focus

    cases = []
    for comparison in focus.COMPARISONS:
        compiles_a_model = comparison.name.endswith("-step")
        marks = [pytest.mark.long] if compiles_a_model and BACKEND == "torch" else []
        cases.append(pytest.param(comparison, marks=marks, id=comparison.name))
    return cases


# Keras's torch layers read `.grad` of a non-leaf tensor while Dynamo traces a
# train step that the harness builds right after another; torch warns, harmlessly.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("comparison", focused_comparisons())
def test_every_focused_comparison_builds_and_times_at_a_tiny_size(comparison):
    """`python -m benchmarks.focus`: each contender compiles and runs; ratios are to the baseline."""
    from benchmarks import focus

    config = Config.quick_preset(repeats=1, warmup=1)
    result = focus.run_backend([comparison.name], config, quick=True)
    found = result["comparisons"][comparison.name]
    assert "error" not in found, found
    timed = found["results"]
    failed = {label: r["error"] for label, r in timed.items() if "time_s" not in r}
    assert not failed
    base = timed[comparison.baseline]["time_s"]
    for label, r in timed.items():
        assert r["ratio"] == pytest.approx(r["time_s"] / base), label
    data = {"created": "now", "command": ["focus"], "backends": {BACKEND: result}}
    text = focus.markdown(data)
    assert f"### {comparison.name}" in text
    for label in timed:
        assert f"| {label} |" in text, label


def test_a_focused_run_of_some_comparisons_keeps_the_others_with_their_run():
    from benchmarks import focus

    def backend(names, created):
        run = {"created": created, "command": ["focus"], "load": [0.5, 0.6]}
        comparisons = {n: {"question": n, "results": {}, "run": run} for n in names}
        return {"device": {}, "comparisons": comparisons}

    previous = {"jax": backend(["a", "b"], "then"), "torch": backend(["a"], "then")}
    merged = focus.merge(previous, {"jax": backend(["b", "c"], "now")})
    runs = {n: c["run"]["created"] for n, c in merged["jax"]["comparisons"].items()}
    assert runs == {"a": "then", "b": "now", "c": "now"}
    assert merged["torch"] == previous["torch"]


def test_a_run_of_some_cases_replaces_only_their_records():
    from benchmarks import report

    def run(cases, started, names):
        records = [{"case": n, "time_s": 1.0} for n in names]
        return {
            "device": {"load_average": [0.1], "load_average_end": [0.2]},
            "config": {"cases": cases},
            "cases": [{"name": n} for n in names if n not in ("copy", "unconstrained")],
            "started": started,
            "seconds": 1.0,
            "projection": records,
            "train_step": records,
        }

    old = run(None, "then", ["copy", "A", "B"])
    new = run(["B"], "now", ["copy", "B"])
    merged = report.merge_runs(old, new)
    got = sorted((r["case"], r is old["projection"][1]) for r in merged["projection"])
    assert got == [("A", True), ("B", False), ("copy", False)]
    assert [c["name"] for c in merged["cases"]] == ["A", "B"]
    assert [r["started"] for r in merged["runs"]] == ["then", "now"]
    assert report.merge_runs(old, run(None, "later", ["copy"]))["started"] == "later"
