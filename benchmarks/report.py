"""The results page of a run: `README.md` (tables) and PNG plots, from pytest-benchmark's JSON.

A results folder holds one pytest-benchmark JSON file per backend (`jax.json`,
...), and this module reads only those, so the page can be redrawn from the
committed files (`python -m benchmarks.report FOLDER`). Ratios are taken in
one file's groups: a constraint over the copy and over its twins timed in
the same run, a train step over the unconstrained one.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import sys

ORDER = ("jax", "tensorflow", "torch")
SHORT = {"jax": "jax", "tensorflow": "tf", "torch": "torch"}


def load(folder):
    """{backend: run} of the backend files in `folder`, each with its `records`."""
    runs = {}
    for backend in ORDER:
        path = pathlib.Path(folder) / f"{backend}.json"
        if path.exists():
            runs[backend] = json.loads(path.read_text())
            runs[backend]["records"] = records(runs[backend])
    return runs


def records(run):
    """A dict per contender: its extra_info, its median, its ratios within its group."""
    out = [{**b["extra_info"], "time_s": b["stats"]["median"]} for b in run["benchmarks"]]
    refs = {r["group"]: r["time_s"] for r in out if r["impl"] in ("copy", "unconstrained")}
    for r in out:
        ref = refs.get(r["group"])
        if r["group"].startswith("projection"):
            r["size"] = math.prod(r["shape"])
            r["ratio_to_copy"] = ref and r["time_s"] / ref
        elif ref:
            r["overhead"] = r["time_s"] / ref - 1
        if r["impl"] == "kconstraints":  # over each twin of the same group
            twins = [t for t in out if (t["group"], t["case"]) == (r["group"], r["case"])]
            r["twins"] = {t["impl"]: r["time_s"] / t["time_s"] for t in twins if t is not r}
    return out


def device_folder(run) -> str:
    """`gpu-nvidia-h100-80gb-hbm3` or `cpu-amd-epyc-2cores`: where a run's results go."""
    m = run["machine_info"]
    if m["kconstraints"]["kind"] == "gpu":
        return "gpu-" + slug(m["kconstraints"]["name"])
    return f"cpu-{slug(m['cpu']['brand_raw'])}-{m['cpu']['count']}cores"


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fmt_time(s):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def fmt_pct(x):
    return "-" if x is None else f"{100 * x:+.1f}%"


def fmt_size(n):
    exp = math.floor(math.log10(n))
    return f"1e{exp}" if 10**exp == n else f"{n:.2g}".replace("+0", "").replace("+", "")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]) + "\n"


def projection(run):
    return [r for r in run["records"] if r["group"].startswith("projection")]


def train(run):
    return [r for r in run["records"] if r["group"].startswith("train ")]


def headline(run):
    """{case: its kconstraints record at the largest size it was timed at}."""
    out = {}
    for r in projection(run):
        if r["impl"] == "kconstraints" and r["size"] >= out.get(r["case"], {}).get("size", 0):
            out[r["case"]] = r
    return out


def oversubscribed(run):
    """Whether other processes competed for the CPUs during a backend's run.

    The load average before the run counts only the others; the one at the
    end also counts the benchmark's own threads (up to one per CPU), so only
    above twice the CPU count does it say that others were there too.
    """
    cpus = run["machine_info"]["cpu"]["count"]
    before = run["machine_info"]["kconstraints"]["load_average"][0]
    return before > cpus or run["kconstraints"]["load_average_end"][0] > 2 * cpus


def section_devices(runs):
    rows = []
    for b, run in runs.items():
        m, ours, commit = run["machine_info"], run["kconstraints"], run["commit_info"]
        d, s, o = m["kconstraints"], ours["settings"], run["benchmarks"][0]["options"]
        name = d.get("name") or f"{m['cpu']['brand_raw']}, {m['cpu']['count']} cores"
        packages = (f"{k} {v}" for k, v in d["packages"].items() if k == "keras" or b in k)
        sizes, sides = ", ".join(map(fmt_size, s["sizes"])), ", ".join(map(str, s["matrix_sizes"]))
        row = {
            "backend": b,
            "device (arrays on)": f"{name} ({d['array_device']})",
            "packages": ", ".join(packages),
            "commit": (commit.get("id") or "?")[:10] + " (dirty)" * bool(commit.get("dirty")),
            "date (UTC)": run["datetime"][:16],
            "load avg": f"{d['load_average'][0]} → {ours['load_average_end'][0]}",
            "mode": "quick" if s["quick"] else "full",
            "sizes": f"{sizes}; n = {sides}",
            "size limits": "<br>".join(f"{k} <= {fmt_size(v)}" for k, v in ours["limits"].items()),
            "timing per contender": f"{o['min_rounds']}+ rounds within {o['max_time']} s",
            "train steps": ", ".join(s["models"]),
        }
        rows.append([value or "-" for value in row.values()])
    busy = ", ".join(b for b, run in runs.items() if oversubscribed(run))
    warning = busy and (
        f"\n**The machine was oversubscribed** during the {busy} run(s): other processes kept "
        "its CPUs busy, so single timings vary several-fold. Read the ratios as orders of "
        "magnitude, and rerun on an idle machine.\n"
    )
    return "## Devices and settings\n\n" + table(list(row), rows) + warning


def headline_table(runs):
    """A row per constraint: its size, x copy, over each twin and train-step cost, per backend."""
    heads = {b: headline(run) for b, run in runs.items()}
    steps = {
        (b, r["group"][6:], r["case"]): r.get("overhead")
        for b, run in runs.items()
        for r in train(run)
        if r["impl"] == "kconstraints"
    }
    models, rows = list(dict.fromkeys(m for _, m, _ in steps)), []
    for case in dict.fromkeys(c for h in heads.values() for c in h):
        got = {b: heads[b].get(case) or {} for b in runs}
        twins = dict.fromkeys(t for e in got.values() for t in e.get("twins", ()))
        row = [case, " / ".join(fmt_size(e["size"]) if e else "-" for e in got.values())]
        row.append(" / ".join(fmt_ratio(e.get("ratio_to_copy")) for e in got.values()))
        ratios = {t: [fmt_ratio(e.get("twins", {}).get(t)) for e in got.values()] for t in twins}
        row.append("<br>".join(f"{t}: " + " / ".join(r) for t, r in ratios.items()) or "-")
        rows.append(
            row + [" / ".join(fmt_pct(steps.get((b, m, case))) for b in got) for m in models]
        )
    names = " / ".join(SHORT[b] for b in runs)
    head = ["constraint", f"size ({names})", f"x copy ({names})"]
    head += [f"time over alternative ({names})", *(f"{m} train step ({names})" for m in models)]
    return table(head, rows)


def section_projection(backend, run):
    recs = projection(run)
    sizes = sorted({r["size"] for r in recs})
    rows = []
    for key in dict.fromkeys((r["case"], r["impl"], r["label"]) for r in recs):
        cells = {r["size"]: r for r in recs if (r["case"], r["impl"], r["label"]) == key}
        shown = [
            r and f"{fmt_time(r['time_s'])} ({fmt_ratio(r['ratio_to_copy'])})"
            for r in map(cells.get, sizes)
        ]
        rows.append([key[2], *(cell or "" for cell in shown)])
    intro = f"## Projection time: {backend}\n\nMedian time per call (x copy).\n\n"
    return intro + table(["implementation", *map(fmt_size, sizes)], rows)


def section_train(runs):
    rows = [
        [b, r["group"][6:], r["label"], fmt_time(r["time_s"]), fmt_pct(r.get("overhead"))]
        for b, run in runs.items()
        for r in train(run)
    ]
    head = ["backend", "model", "every kernel under", "time", "over unconstrained"]
    return "## Train step\n\nMedian time of one compiled train step.\n\n" + table(head, rows)


def section_graph_breaks(runs):
    counted = [(b, r) for b, run in runs.items() for r in run["records"] if "graph_breaks" in r]
    rows = [[b, r["group"], r["label"], r["graph_breaks"]] for b, r in counted if r["graph_breaks"]]
    text = "## Graph breaks\n\nCounted by torch's Dynamo while compiling each contender; the "
    text += "code between breaks runs as Python, not compiled. "
    head = ["backend", "group", "implementation", "graph breaks"]
    return counted and text + ("\n\n" + table(head, rows) if rows else "No contender met one.\n")


def section_errors(runs):
    errors = [(b, e) for b, run in runs.items() for e in run["kconstraints"]["errors"]]
    rows = [[b, e["group"], e["label"], f"`{e['error']}`"] for b, e in errors]
    return rows and "## Errors\n\n" + table(["backend", "group", "implementation", "error"], rows)


def markdown(runs, plots):
    parts = [
        "# kconstraints benchmarks\n",
        "Generated by `python -m benchmarks`: pytest-benchmark's JSON, one file per backend in "
        "this folder (see `docs/benchmarks.md`). Times are medians of rounds of compiled calls, "
        "the device synchronised at the end of each round. `x copy` is the time over that of "
        "`2 * w` on the same array in the same run (read once, write once: the memory-bandwidth "
        "floor).\n",
        section_devices(runs),
        "## Headline\n\nEach constraint at the largest size it was timed at; `time over "
        "alternative` below 1 means kconstraints is faster; the train-step columns are the "
        "time added to a compiled step with every kernel constrained.\n\n" + headline_table(runs),
        *(section_projection(b, run) for b, run in runs.items()),
        section_train(runs),
        section_graph_breaks(runs),
        *(f"![{name}]({name})\n" for name in plots),
        section_errors(runs),
    ]
    return "\n".join(p for p in parts if p)


def write(folder):
    """Redraw `README.md` and the plots of a results folder; returns the runs read."""
    folder = pathlib.Path(folder)
    runs = load(folder)
    if not runs:
        raise FileNotFoundError(f"no <backend>.json in {folder}")
    (folder / "README.md").write_text(markdown(runs, draw(folder, runs)))
    return runs


# One row of panels per family, one column per backend; a dash per library.
ROWS = (("elementwise", "elementwise"), ("per slice", "slice"), ("combinations", "combination"))
STYLES = {"kconstraints": "-", "keras": "--", "optax": ":", "keras-guide": "-."}


def draw(out, runs):
    """Draw the PNGs; returns their file names (none when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    recs = {b: [r for r in projection(run) if r["impl"] != "copy"] for b, run in runs.items()}
    found = {r["family"] for p in recs.values() for r in p}
    steps = {b: [r for r in train(run) if r["impl"] != "unconstrained"] for b, run in runs.items()}
    steps = {b: s for b, s in steps.items() if s and "overhead" in s[0]}
    plots = {
        "projection.png": [row for row in ROWS if row[1] in found],
        "matrix.png": [("matrix constraints", "matrix")] if "matrix" in found else [],
    }
    plots = {name: rows for name, rows in plots.items() if rows}
    for name, rows in plots.items():
        _save(plt, _lines(plt, rows, recs), out / name)
    if steps:
        _save(plt, _bars(plt, steps), out / "train-step.png")
    return [*plots, *(["train-step.png"] if steps else [])]


def _lines(plt, rows, recs):
    """Log-log: the ratio to the copy against the size, or matrices' seconds against n."""
    size = (4.6 * len(recs) + 2.6, 3.4 * len(rows))
    fig, axes = plt.subplots(len(rows), len(recs), figsize=size, squeeze=False)
    for row, (title, family) in zip(axes, rows, strict=True):
        for ax, (backend, all_recs) in zip(row, recs.items(), strict=True):
            mine = [r for r in all_recs if r["family"] == family]
            matrix, cases = family == "matrix", list(dict.fromkeys(r["case"] for r in mine))
            for case, impl in dict.fromkeys((r["case"], r["impl"]) for r in mine):
                line = sorted(
                    (r for r in mine if (r["case"], r["impl"]) == (case, impl)),
                    key=lambda r: r["size"],
                )
                xs = [r["shape"][0] if matrix else r["size"] for r in line]
                ys = [r["time_s" if matrix else "ratio_to_copy"] for r in line]
                k = cases.index(case)
                colour = f"C{k}" if len(cases) <= 10 else plt.get_cmap("tab20")(k % 20)
                label = case if impl == "kconstraints" else f"{case} ({impl})"
                ax.plot(
                    xs, ys, ls=STYLES.get(impl, "-"), color=colour, marker="o", ms=3, label=label
                )
            if not matrix:
                ax.axhline(1, color="black", lw=1)
            ax.set(xscale="log", yscale="log", title=f"{backend}: {title}")
            ax.set(xlabel="n (n x n kernel)" if matrix else "weight entries")
            ax.set(ylabel="seconds per call" if matrix else "time / copy")
            ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return fig


def _bars(plt, steps):
    """A bar chart per (backend, model): % over the unconstrained step."""
    groups = {
        b: {r["group"][6:]: [x for x in s if x["group"] == r["group"]] for r in s}
        for b, s in steps.items()
    }
    cols = max(map(len, groups.values()))
    fig, axes = plt.subplots(
        len(groups), cols, figsize=(5 * cols, 4.5 * len(groups)), squeeze=False
    )
    for row, (backend, models) in zip(axes, groups.items(), strict=True):
        for ax in row[len(models) :]:
            ax.axis("off")
        for ax, (model, mine) in zip(row, models.items(), strict=False):
            ours = [r["impl"] == "kconstraints" for r in mine]
            labels = [
                r["case"] + ("" if o else f" ({r['impl']})")
                for r, o in zip(mine, ours, strict=True)
            ]
            ax.barh(
                labels,
                [100 * r["overhead"] for r in mine],
                color=["tab:blue" if o else "tab:gray" for o in ours],
            )
            ax.axvline(0, color="black", lw=1)
            ax.set_xscale("symlog", linthresh=1)  # linear within 1%: an SVD and 1% on one axis
            ax.set(title=f"{backend} {model}", xlabel="% over unconstrained step")
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=7)
    return fig


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    write(sys.argv[1])
