"""The benchmark harness: a quick `python -m benchmarks` run, its JSON, its results page.

Run by the `bench_smoke` nox session on each backend (and by `tests(backend)`
after the suite). That every registry variant is a case and that each twin
computes the same projection is in `tests/test_benchmarks.py`.
"""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import backend, report
from tests.backend import BACKEND

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}
# An elementwise constraint and a norm, each with a Keras twin (and optax on JAX);
# train steps of one, with its twin (torch.compile takes 5-20 s a model on 2 cores).
SMOKE_CASES = ("NonNeg", "MaxNorm")
SMOKE_TRAIN = "MaxNorm"


def markdown_rows(text):
    """The cells of every Markdown table row in `text`, separator rows left out."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return [row for row in rows if set(row) != {"---"}]


def shows(cell, value):
    """Whether `cell` shows the time `value` (`1.23 ms (1.05x)`) to 3 significant digits."""
    match = re.match(r"([0-9.]+(?:e[+-]?[0-9]+)?) (s|ms|µs|ns)\b", cell)
    return bool(match) and abs(float(match[1]) * UNITS[match[2]] - value) <= 5e-3 * value


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`python -m benchmarks --quick` on the active backend, as a user runs it."""
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--backend", BACKEND]
    cmd += ["--cases", ",".join(SMOKE_CASES), "--models", "mlp", "--train-cases", SMOKE_TRAIN]
    cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / f"{BACKEND}.json").read_text()), out


def expected_contenders():
    from benchmarks.cases import select

    projection = {("projection 100x100", "copy", "copy")}
    train = {("train mlp", "unconstrained", "unconstrained")}
    for case in select(SMOKE_CASES):
        twins = case.twins_on(BACKEND)
        projection.add(("projection 100x100", case.name, "kconstraints"))
        projection |= {("projection 100x100", case.name, t.library) for t in twins if t.make}
        if case.name == SMOKE_TRAIN:
            train.add(("train mlp", case.name, "kconstraints"))
            train |= {("train mlp", case.name, t.library) for t in twins if t.keras_constraint}
    return projection | train


def test_the_json_is_pytest_benchmarks_with_every_contender(quick_run):
    data, _ = quick_run
    timed = {
        (b["group"], b["extra_info"]["case"], b["extra_info"]["impl"]) for b in data["benchmarks"]
    }
    assert timed == expected_contenders()
    for b in data["benchmarks"]:
        assert b["group"] == b["extra_info"]["group"]
        assert b["stats"]["median"] > 0 and b["stats"]["rounds"] >= 3, b["name"]
        assert b["options"]["timer"] == "clock"  # benchmarks.backend.clock, which syncs
        # torch counts the graph breaks of each compile; no kconstraints projection has one.
        assert ("graph_breaks" in b["extra_info"]) == (BACKEND == "torch")
        if b["group"].startswith("projection") and b["extra_info"]["impl"] == "kconstraints":
            assert b["extra_info"].get("graph_breaks", 0) == 0, b["name"]
    ours = data["kconstraints"]
    assert ours["errors"] == [] and ours["settings"]["cases"] == list(SMOKE_CASES)
    assert data["machine_info"]["kconstraints"]["backend"] == BACKEND
    assert data["machine_info"]["kconstraints"]["packages"]["keras"]
    assert data["commit_info"]  # which commit it timed: what `pytest-benchmark compare` shows


def test_the_page_shows_every_timing_with_its_ratio(quick_run):
    data, out = quick_run
    rows = markdown_rows((out / "README.md").read_text())
    for r in report.records(data):
        if r["group"].startswith("projection"):
            row = next(row for row in rows if row[0] == r["label"])
            assert any(shows(cell, r["time_s"]) for cell in row[1:]), (r["label"], row)
            assert any(f"({r['ratio_to_copy']:.2f}x)" in cell for cell in row[1:]), row
        else:
            (row,) = [row for row in rows if row[:3] == [BACKEND, "mlp", r["label"]]]
            assert shows(row[3], r["time_s"]), row
            assert abs(float(row[4].rstrip("%")) - 100 * r["overhead"]) <= 0.05 + 1e-9
    headline = {row[0]: row for row in rows if row[0] in SMOKE_CASES}
    assert set(headline) == set(SMOKE_CASES)
    assert "keras: " in headline["MaxNorm"][3]


def test_the_page_draws_its_plots(quick_run):
    pytest.importorskip("matplotlib", reason="the plots need matplotlib (the bench group has it)")
    _, out = quick_run
    text = (out / "README.md").read_text()
    for png in ("projection.png", "train-step.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_ratios_are_to_the_reference_and_the_twins_of_the_same_group():
    def bench(group, case, impl, median, shape=(2, 2)):
        info = {"group": group, "case": case, "impl": impl, "shape": shape}
        return {"extra_info": info, "stats": {"median": median, "rounds": 5}}

    run = {
        "benchmarks": [
            bench("projection 2x2", "copy", "copy", 2.0),
            bench("projection 2x2", "A", "kconstraints", 3.0),
            bench("projection 2x2", "A", "keras", 6.0),
            bench("projection 4x4", "copy", "copy", 10.0, (4, 4)),
            bench("projection 4x4", "A", "kconstraints", 5.0, (4, 4)),
            bench("train mlp", "unconstrained", "unconstrained", 4.0, None),
            bench("train mlp", "A", "kconstraints", 5.0, None),
        ]
    }
    got = {(r["group"], r["impl"]): r for r in report.records(run)}
    assert got["projection 2x2", "kconstraints"]["ratio_to_copy"] == 1.5
    assert got["projection 2x2", "kconstraints"]["twins"] == {"keras": 0.5}
    assert got["projection 4x4", "kconstraints"]["ratio_to_copy"] == 0.5
    assert got["train mlp", "kconstraints"]["overhead"] == 0.25
    run["records"] = list(got.values())
    assert report.headline(run)["A"]["size"] == 16


def test_the_clock_waits_for_the_last_output(monkeypatch):
    waited = []
    monkeypatch.setattr(backend, "sync", waited.append)
    backend.timed(lambda: "out")
    backend.clock()
    assert waited == ["out"]


@pytest.mark.parametrize(
    "before, after, busy",
    [(1.1, 2.1, False), (0.5, 3.9, False), (2.5, 2.0, True), (1.0, 4.5, True)],
)
def test_oversubscribed_discounts_the_benchmarks_own_threads(before, after, busy):
    run = {
        "machine_info": {"cpu": {"count": 2}, "kconstraints": {"load_average": [before]}},
        "kconstraints": {"load_average_end": [after]},
    }
    assert report.oversubscribed(run) is busy
