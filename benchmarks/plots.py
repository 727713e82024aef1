"""The PNG plots of a benchmark report, drawn with matplotlib from the result JSON."""

from __future__ import annotations


def ok(records):
    return [r for r in records if "time_s" in r]


def draw(out, data):
    """Draw the PNGs; returns their file names (none when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    backends = {b: r for b, r in data["backends"].items() if "error" not in r}
    names = []
    for name, drawn in (
        ("projection.png", _plot_projection(plt, backends, out / "projection.png")),
        ("matrix.png", _plot_matrix(plt, backends, out / "matrix.png")),
        ("train-step.png", _plot_train(plt, backends, out / "train-step.png")),
    ):
        if drawn:
            names.append(name)
    return names


# One row of panels per group of families, one column per backend.
ROWS = (
    ("elementwise", ("elementwise",)),
    ("norms and means", ("reduction",)),
    ("sorts, isotonic, combinations", ("sort", "isotonic", "composite")),
)
STYLES = {"kconstraints": "-", "keras": "--", "optax": ":", "keras-guide": "-."}


def _lines(ax, recs, key, cases):
    """One line per (case, impl): a colour per case, a dash per library."""
    colours = {c: f"C{i % 10}" if len(cases) <= 10 else _tab20(i) for i, c in enumerate(cases)}
    for case, impl in dict.fromkeys((x["case"], x["impl"]) for x in recs):
        line = sorted(
            (x for x in recs if x["case"] == case and x["impl"] == impl), key=lambda x: x["size"]
        )
        label = case if impl == "kconstraints" else f"{case} ({impl})"
        ax.plot(
            [x["size"] if key == "ratio_to_copy" else x["shape"][0] for x in line],
            [x[key] for x in line],
            ls=STYLES.get(impl, "-"),
            color=colours[case],
            marker="o",
            ms=3,
            label=label,
        )


def _tab20(i):
    import matplotlib

    return matplotlib.colormaps["tab20"](i % 20)


def _panels(plt, rows, cols, path, draw_panel):
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(4.6 * len(cols) + 2.6, 3.4 * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):
            draw_panel(axes[r, c], row, col)
            axes[r, c].grid(True, which="both", alpha=0.3)
        handles, labels = axes[r, -1].get_legend_handles_labels()
        if handles:
            axes[r, -1].legend(
                handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1)
            )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_projection(plt, backends, path):
    rows = [
        (title, families)
        for title, families in ROWS
        if any(x.get("family") in families for r in backends.values() for x in ok(r["projection"]))
    ]
    if not rows:
        return False

    def panel(ax, row, backend):
        title, families = row
        recs = [x for x in ok(backends[backend]["projection"]) if x.get("family") in families]
        cases = list(dict.fromkeys(x["case"] for x in recs))
        _lines(ax, recs, "ratio_to_copy", cases)
        ax.axhline(1, color="black", lw=1)
        ax.set(xscale="log", yscale="log", title=f"{backend}: {title}", ylabel="time / copy")
        ax.set_xlabel("weight entries")

    _panels(plt, rows, list(backends), path, panel)
    return True


def _plot_matrix(plt, backends, path):
    if not any(x.get("family") == "matrix" for r in backends.values() for x in ok(r["projection"])):
        return False

    def panel(ax, row, backend):
        recs = [x for x in ok(backends[backend]["projection"]) if x.get("family") == "matrix"]
        cases = list(dict.fromkeys(x["case"] for x in recs))
        _lines(ax, recs, "time_s", cases)
        ax.set(xscale="log", yscale="log", title=f"{backend}: matrix constraints")
        ax.set(xlabel="n (n x n kernel)", ylabel="seconds per call")

    _panels(plt, ["matrix"], list(backends), path, panel)
    return True


def _plot_train(plt, backends, path):
    """A row of bar charts per backend, one chart per model."""
    groups = {}
    for backend, r in backends.items():
        for t in r["train_step"]:
            if "overhead" in t and t["case"] != "unconstrained":
                groups.setdefault(backend, {}).setdefault(t["model"], []).append(t)
    if not groups:
        return False
    cols = max(len(models) for models in groups.values())
    fig, axes = plt.subplots(
        len(groups), cols, figsize=(5 * cols, 4.5 * len(groups)), squeeze=False
    )
    for row, (backend, models) in enumerate(groups.items()):
        for col in range(cols):
            ax = axes[row, col]
            if col >= len(models):
                ax.axis("off")
                continue
            model, recs = list(models.items())[col]
            labels = [
                t["case"] + ("" if t["impl"] == "kconstraints" else f" ({t['impl']})") for t in recs
            ]
            colors = ["tab:blue" if t["impl"] == "kconstraints" else "tab:gray" for t in recs]
            ax.barh(labels, [100 * t["overhead"] for t in recs], color=colors)
            ax.axvline(0, color="black", lw=1)
            # Linear within +-1%, logarithmic beyond: an SVD per step and a
            # 1% elementwise overhead fit on one axis.
            ax.set_xscale("symlog", linthresh=1)
            ax.set(title=f"{backend} {model}", xlabel="% over unconstrained step")
            ax.invert_yaxis()
            ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
