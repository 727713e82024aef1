"""The report of a run: `results.json`, `README.md` (Markdown tables) and PNG plots.

Reads only the JSON the workers wrote, so a report can be redrawn from a
committed `results.json` (`python -m benchmarks.report FOLDER`).
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import sys

from benchmarks.config import versions
from benchmarks.plots import draw, ok

ORDER = ("jax", "tensorflow", "torch")
SHORT = {"jax": "jax", "tensorflow": "tf", "torch": "torch"}
# The speed kconstraints aims for (`section_targets` states it), reported and
# never asserted: timings on a shared machine are too noisy to fail a build on.
TARGETS = {
    "parity": 1.05,  # a parity class over its Keras twin
    "elementwise": 1.10,  # over a copy
    "reduction": 1.50,  # over a copy
    "train": 0.03,  # added to a train step (elementwise and reduction cases)
}


def write(out, results, merge=True, command=None):
    """Merge `results` ({backend: worker result}) into `out` and redraw everything."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    backends = {}
    if merge and path.exists():
        backends = json.loads(path.read_text()).get("backends", {})
    for backend, result in results.items():
        backends[backend] = merge_runs(backends[backend], result) if backend in backends else result
    data = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "host_packages": versions(),
        "backends": {b: backends[b] for b in sorted(backends, key=_rank)},
    }
    path.write_text(json.dumps(data, indent=1) + "\n")
    plots = draw(out, data)
    (out / "README.md").write_text(markdown(data, plots))
    return data


def run_summary(result):
    """When a run of one backend started, how long it took, its cases and the load."""
    d = result["device"]
    load = [d["load_average"][0], d.get("load_average_end", ["?"])[0]]
    cases = result["config"].get("cases") or "all"
    return {
        "started": result["started"],
        "seconds": result["seconds"],
        "cases": cases,
        "load": load,
    }


def merge_runs(old, new):
    """A run of some cases (`--cases`) over an earlier run of the same backend.

    The records of the cases it ran, and its references (the copy, the
    unconstrained step), replace the earlier ones; every other case keeps
    the records of the run that made them, and `runs` lists each run. A
    run of every case replaces the earlier one whole.
    """
    ran = new.get("config", {}).get("cases")
    if not ran or "error" in new or "error" in old:
        return new
    replaced = {*ran, "copy", "unconstrained"}
    merged = dict(new)
    for key in ("projection", "train_step"):
        merged[key] = [r for r in old.get(key, []) if r["case"] not in replaced] + new.get(key, [])
    names = {c["name"] for c in new["cases"]}
    merged["cases"] = [c for c in old["cases"] if c["name"] not in names] + new["cases"]
    merged["runs"] = [*old.get("runs", [run_summary(old)]), run_summary(new)]
    return merged


def _rank(backend):
    return ORDER.index(backend) if backend in ORDER else len(ORDER)


# ------------------------------------------------------------------ formats


def fmt_time(s):
    if s is None:
        return "-"
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
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------ selections


def find(records, **match):
    for r in records:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def headline_sizes(records):
    """(size, matrix side) at which to compare the constraints.

    The largest size that any constraint neither elementwise nor matrix
    reached (the run's cap for them; elementwise constraints are compared
    there too, past the caches), and the largest matrix side. A constraint
    that stopped earlier (its own size limit) is shown at its largest size.
    """
    kc = [r for r in ok(records) if r["impl"] == "kconstraints"]
    capped = [r["size"] for r in kc if r["family"] not in ("elementwise", "matrix")]
    plain = capped or [r["size"] for r in kc if r["family"] != "matrix"]
    square = [r["size"] for r in kc if r["family"] == "matrix"]
    return max(plain, default=None), max(square, default=None)


def headline(records):
    """{case: {family, size, ratio_to_copy, twins}} at the headline sizes."""
    size, square = headline_sizes(records)
    largest = {}
    for r in ok(records):
        limit = square if r["family"] == "matrix" else size
        if r["impl"] == "kconstraints" and r["size"] <= limit:
            largest[r["case"]] = max(largest.get(r["case"], 0), r["size"])
    out = {}
    for r in ok(records):
        if r["impl"] != "kconstraints" or r["size"] != largest[r["case"]]:
            continue
        twins = [
            t
            for t in ok(records)
            if t["case"] == r["case"] and t["size"] == r["size"] and t["impl"] != "kconstraints"
        ]
        entry = {"family": r["family"], "size": r["size"], "ratio_to_copy": r.get("ratio_to_copy")}
        entry["twins"] = {t["impl"]: r["time_s"] / t["time_s"] for t in twins}
        out[r["case"]] = entry
    return {case: out[case] for case in largest}  # in the order the cases ran


def overheads(train):
    """{(model, case): overhead} of the kconstraints variants."""
    return {
        (r["model"], r["case"]): r["overhead"]
        for r in train
        if r["impl"] == "kconstraints" and "overhead" in r
    }


# ----------------------------------------------------------------- markdown


def markdown(data, plots):
    backends = {b: r for b, r in data["backends"].items() if "error" not in r}
    lines = ["# kconstraints benchmarks\n"]
    lines.append(
        "Generated by `python -m benchmarks` (see `docs/running.md`); the tables are "
        "redrawn from `results.json` by `python -m benchmarks.report <folder>`. "
        "Times are medians of compiled calls after warm-up, the device synchronised "
        "before each clock read. `x copy` is the time over that of `2 * w` on the same "
        "array in the same run (read once, write once: the memory-bandwidth floor).\n"
    )
    lines.append(section_devices(data))
    lines.append(section_settings(data))
    if backends:
        lines.append(section_headline(backends))
        lines.append(section_targets(backends))
        for backend, result in backends.items():
            lines.append(section_projection(backend, result))
        lines.append(section_train(backends))
        lines.append(section_graph_breaks(backends))
    for name in plots:
        lines.append(f"![{name}]({name})\n")
    failed = {b: r["error"] for b, r in data["backends"].items() if "error" in r}
    errors = [
        (b, r.get("model", "projection"), r["case"], r["impl"], r["error"])
        for b, res in backends.items()
        for r in res["projection"] + res["train_step"]
        if "error" in r
    ]
    if failed or errors:
        lines.append("## Errors\n")
        lines += [f"- {b}: {e}" for b, e in failed.items()]
        lines += [f"- {b} {m} {c} ({i}): `{e}`" for b, m, c, i, e in errors]
        lines.append("")
    return "\n".join(lines)


def oversubscribed(result):
    """Whether other processes competed for the CPUs during a backend's run.

    The load average before the run counts only the others. The one read at
    the end also counts the benchmark's own threads, up to one per CPU with
    the backends' default thread counts, so only a load above twice the CPU
    count says that others were there too (an idle 2-core machine read
    1.1 -> 2.1 over a JAX run).
    """
    d = result["device"]
    cpus = d["cpu_count"]
    return d["load_average"][0] > cpus or d.get("load_average_end", [0])[0] > 2 * cpus


def section_devices(data):
    rows = []
    for backend, r in data["backends"].items():
        if "error" in r:
            rows.append([backend, r["error"], "", "", "", ""])
            continue
        d, c = r["device"], r["config"]
        pkgs = ", ".join(
            f"{k} {v}" for k, v in d["packages"].items() if k == "keras" or k.startswith(backend)
        )
        load = f"{d['load_average'][0]} → {d.get('load_average_end', ['?'])[0]}"
        mode = "quick" if c["quick"] else "full"
        rows.append(
            [backend, f"{d['name']} ({d['array_device']})", pkgs, load, mode, f"{r['seconds']} s"]
        )
    busy = [b for b, r in data["backends"].items() if "error" not in r and oversubscribed(r)]
    warning = ""
    if busy:
        warning = (
            f"\n**The machine was oversubscribed** during the {', '.join(busy)} run(s): "
            "other processes kept its CPUs busy, so they took turns with the benchmark "
            "and single timings vary several-fold. Read the ratios as orders of "
            "magnitude, and rerun on an idle machine before drawing finer conclusions.\n"
        )
    head = ["backend", "device (arrays on)", "packages", "load avg", "mode", "wall time"]
    runs = [
        f"- {backend}: {run['started']}, {run['seconds']} s, load {run['load'][0]} → "
        f"{run['load'][1]}, cases: {run['cases'] if run['cases'] == 'all' else ', '.join(run['cases'])}"
        for backend, r in data["backends"].items()
        for run in r.get("runs", [])
    ]
    if runs:
        runs = [
            "",
            "Merged from several runs (the table shows the last one); each case's",
            "records come from the last run that timed it:",
            "",
            *runs,
            "",
        ]
    return "## Devices\n\n" + table(head, rows) + "\n".join(runs) + warning


def section_settings(data):
    rows = []
    for backend, r in data["backends"].items():
        if "error" in r:
            continue
        c = r["config"]
        sizes = ", ".join(map(fmt_size, c["sizes"]))
        cap = c["max_reduction_size"]
        caps = [
            f"{x['name']} <= {fmt_size(x['max_size'])}" for x in r.get("cases", []) if x["max_size"]
        ]
        if cap:
            caps.insert(0, f"all but elementwise <= {fmt_size(cap)}")
        train = ", ".join(c["train_models"]) if c["train"] else "not run"
        if c["train"] and c.get("train_cases") is not None:
            train += ": " + ", ".join(c["train_cases"])
        rows.append(
            [
                backend,
                sizes,
                "<br>".join(caps) or "-",
                ", ".join(map(str, c["matrix_sizes"])),
                f"{c['repeats']} x {c['min_time']} s",
                train,
                c.get("threads") or "default",
            ]
        )
    head = ["backend", "sizes", "size limits", "matrix sides", "rounds x min time", "train steps"]
    head.append("CPU threads")
    return "## Settings\n\n" + table(head, rows)


def headline_table(backends, models=None, family=True):
    """The headline comparison as a Markdown table; `models` picks the train-step columns."""
    heads = {b: headline(r["projection"]) for b, r in backends.items()}
    trains = {b: overheads(r["train_step"]) for b, r in backends.items()}
    cases = list(dict.fromkeys(c for h in heads.values() for c in h))
    if models is None:
        models = list(dict.fromkeys(m for t in trains.values() for m, _ in t))
    names = " / ".join(SHORT.get(b, b) for b in backends)
    rows = []
    for case in cases:
        entries = [heads[b].get(case) for b in backends]
        first = next(e for e in entries if e)
        sizes = " / ".join(fmt_size(e["size"]) if e else "-" for e in entries)
        row = [case, first["family"], sizes] if family else [case, sizes]
        row.append(" / ".join(fmt_ratio(e and e["ratio_to_copy"]) for e in entries))
        twins = list(dict.fromkeys(t for e in entries if e for t in e["twins"]))
        row.append(
            "<br>".join(
                f"{t}: " + " / ".join(fmt_ratio(e and e["twins"].get(t)) for e in entries)
                for t in twins
            )
            or "-"
        )
        for model in models:
            row.append(" / ".join(fmt_pct(trains[b].get((model, case))) for b in backends))
        rows.append(row)
    head = ["constraint", "family"] if family else ["constraint"]
    head += [f"size ({names})", f"x copy ({names})", f"time over alternative ({names})"]
    head += [f"{m} train step ({names})" for m in models]
    return table(head, rows)


def section_headline(backends):
    return (
        "## Headline\n\nProjection at the largest size the constraints that are neither "
        "elementwise nor matrix reached (or a constraint's own largest; matrices at the "
        "largest side); "
        "`time over alternative` below 1 means kconstraints is faster; the train-step "
        "columns are the time added to a compiled step with every kernel constrained.\n\n"
        + headline_table(backends)
    )


def section_targets(backends):
    rows = []
    for backend, r in backends.items():
        head, train = headline(r["projection"]), overheads(r["train_step"])
        for case, e in head.items():
            checks = []
            keras = e["twins"].get("keras")
            if keras is not None and e["family"] != "matrix":
                label = f"within {TARGETS['parity'] - 1:.0%} of Keras"
                checks.append((label, keras, keras <= TARGETS["parity"]))
            if e["family"] in ("elementwise", "reduction") and e["ratio_to_copy"]:
                limit = TARGETS[e["family"]]
                checks.append(
                    (f"≤ {limit:.2f}x copy", e["ratio_to_copy"], e["ratio_to_copy"] <= limit)
                )
            optax = e["twins"].get("optax")
            if optax is not None and e["family"] == "sort":
                checks.append(("faster than optax", optax, optax < 1))
            for label, value, met in checks:
                rows.append(
                    [backend, case, label, fmt_ratio(value), "met" if met else "**missed**"]
                )
            if e["family"] in ("elementwise", "reduction"):
                for (model, c), over in train.items():
                    if c == case:
                        met = over < TARGETS["train"]
                        rows.append(
                            [
                                backend,
                                case,
                                f"{model} step < +{TARGETS['train']:.0%}",
                                fmt_pct(over),
                                "met" if met else "**missed**",
                            ]
                        )
    return (
        "## Targets\n\nThe speed kconstraints aims for, at the headline sizes: a parity "
        f"class within {TARGETS['parity'] - 1:.0%} of its Keras twin, an elementwise "
        f"constraint within {TARGETS['elementwise']:.2f}x a copy, a reduction within "
        f"{TARGETS['reduction']:.2f}x, a sort-based one faster than optax, and an "
        f"elementwise or reduction constraint adding less than {TARGETS['train']:.0%} to "
        "a train step. Reported, not asserted.\n\n"
        + table(["backend", "constraint", "target", "value", ""], rows)
    )


def section_projection(backend, result):
    records = result["projection"]
    sizes = sorted({r["size"] for r in records})
    rows = []
    keys = list(dict.fromkeys((r["case"], r["impl"], r["impl_name"]) for r in records))
    for case, impl, name in keys:
        cells = []
        for size in sizes:
            r = find(records, case=case, impl=impl, size=size)
            if r is None:
                cells.append("")
            elif "error" in r:
                cells.append("error")
            elif case == "copy":
                cells.append(f"{fmt_time(r['time_s'])} ({r['bandwidth_gbs']:.3g} GB/s)")
            else:
                cells.append(f"{fmt_time(r['time_s'])} ({fmt_ratio(r.get('ratio_to_copy'))})")
        rows.append([name, *cells])
    return f"## Projection time: {backend}\n\nTime per call (x copy).\n\n" + table(
        ["implementation", *map(fmt_size, sizes)], rows
    )


def section_train(backends):
    rows = []
    for backend, r in backends.items():
        for t in r["train_step"]:
            value = "error" if "error" in t else fmt_time(t["time_s"])
            rows.append([backend, t["model"], t["impl_name"], value, fmt_pct(t.get("overhead"))])
    return "## Train step\n\nMedian time of one compiled train step.\n\n" + table(
        ["backend", "model", "every kernel under", "time", "over unconstrained"], rows
    )


def section_graph_breaks(backends):
    """torch: the contenders whose compile met graph breaks (that code ran as Python)."""
    counts = {}
    for backend, r in backends.items():
        for t in r["projection"] + r["train_step"]:
            if t.get("graph_breaks"):
                key = (backend, t.get("model", "projection"), t["impl_name"])
                counts[key] = max(counts.get(key, 0), t["graph_breaks"])
    if not any("graph_breaks" in t for r in backends.values() for t in r["projection"]):
        return ""
    intro = (
        "## Graph breaks\n\nCounted by torch's Dynamo while compiling each contender "
        "(most at any size); the code between breaks runs as Python, not compiled. "
    )
    if not counts:
        return intro + "No contender met one.\n"
    rows = [[b, m, name, str(n)] for (b, m, name), n in counts.items()]
    return intro + "\n\n" + table(["backend", "part", "implementation", "graph breaks"], rows)


def main(argv=None):
    """Redraw the tables and plots of a results folder; `--readme` prints the short headline."""
    args = argv or sys.argv[1:]
    folder = pathlib.Path(args[0])
    data = json.loads((folder / "results.json").read_text())
    if "--readme" in args[1:]:
        backends = {b: r for b, r in data["backends"].items() if "error" not in r}
        print(headline_table(backends, models=["mlp"], family=False), end="")
        return
    plots = draw(folder, data)
    (folder / "README.md").write_text(markdown(data, plots))


if __name__ == "__main__":
    main()
