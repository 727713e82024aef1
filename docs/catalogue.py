"""Writes every list of the constraints from the registry: `python -m docs.catalogue`.

The registry (`kconstraints._registry.SPECS`, filled by each class's
`@register(...)`) is the one declaration of a constraint. This script
rewrites the blocks between `<!-- catalogue:NAME -->` and
`<!-- /catalogue:NAME -->` (`# catalogue:NAME` lines in Python) in the files
below; `tests/test_registry.py` fails while any of them differs from what it
would write. `--check` only reports the files that are out of date.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The section of the API reference each module gets, in the page's order.
# A module that declares a constraint and is missing here is an error.
SECTIONS = {
    "bounds": "Bounds",
    "affine": "Affine sets",
    "polyhedron": "Polyhedra",
    "norm": "Norms",
    "simplex": "Simplex and L1 ball",
    "order": "Order",
    "sparse": "Sparsity",
    "stochastic": "Doubly stochastic matrices",
    "masked": "Masks and frozen entries",
    "combine": "Combinations",
    "matrix": "Matrices",
    "lipschitz": "Convolution norms and Lipschitz layers",
    "penalty": "Soft constraints",
}
# What each module exports besides its constraint classes, in the reference.
EXTRA_MEMBERS = {"lipschitz": ["conv_norm_bound", "dense_norm_bound"]}
# The docs landing page's names for the families.
FAMILY_TITLES = {
    "elementwise": "elementwise",
    "slice": "per slice (unit, filter)",
    "matrix": "matrices and kernels",
    "combination": "combinations",
    "soft": "soft",
}


def specs():
    """The registry, grouped by family in `FAMILIES` order, each group in the reference's order."""
    import importlib
    import pkgutil

    import kconstraints

    # Every module, exported or not yet: each registers its classes on import.
    for info in pkgutil.iter_modules(kconstraints.__path__):
        importlib.import_module(f"kconstraints.{info.name}")
    from kconstraints._registry import FAMILIES, SPECS

    missing = sorted({s.module for s in SPECS} - set(SECTIONS))
    if missing:
        raise SystemExit(f"docs/catalogue.py: add a SECTIONS title for module(s) {missing}")
    order = list(SECTIONS)
    return sorted(SPECS, key=lambda s: (list(FAMILIES).index(s.family), order.index(s.module)))


def _by_module(all_specs):
    """Module -> its specs in declaration order, modules in `SECTIONS` order."""
    from kconstraints._registry import SPECS

    grouped = {m: [s for s in SPECS if s.module == m] for m in SECTIONS}
    return {m: group for m, group in grouped.items() if group}


def _signature(cls):
    params = cls._arguments()  # `__init__`'s named arguments, as the config stores them
    if cls.__name__ in ("Compose", "Intersection"):
        params = ["[c1, c2, ...]" if p == "constraints" else p for p in params]
    return f"{cls.__name__}({', '.join(params)})"


def readme_table(all_specs):
    rows = ["| constraint | the set it projects onto | module |", "| --- | --- | --- |"]
    rows += [f"| `{_signature(s.cls)}` | {s.summary} | `{s.module}` |" for s in all_specs]
    return "\n".join(rows)


def index_table(all_specs):
    from kconstraints._registry import FAMILIES

    rows = ["| kind | constraints |", "| --- | --- |"]
    for family in FAMILIES:
        names = ", ".join(f"`{s.name}`" for s in all_specs if s.family == family)
        rows.append(f"| {FAMILY_TITLES[family]} | {names} |")
    return "\n".join(rows)


def uses_table(all_specs):
    """The "Which constraint?" table: each `uses` phrase and the constraints that declare it.

    Rows follow the reference's module order (`SECTIONS`), then the order
    the modules declare their classes.
    """
    rank = {module: i for i, module in enumerate(SECTIONS)}
    rows = {}
    for spec in sorted(all_specs, key=lambda s: rank[s.module]):
        for use in spec.uses:
            rows.setdefault(use, []).append(f"`{spec.name}`")
    lines = ["| you want | use |", "| --- | --- |"]
    lines += [f"| {use} | {', '.join(names)} |" for use, names in rows.items()]
    return "\n".join(lines)


def not_exact_list(all_specs):
    """The constraints that are not (always) the exact Euclidean projection, and why."""
    return "\n".join(f"- `{s.name}`: {s.exact}." for s in all_specs if s.exact is not True)


def reference_sections(all_specs):
    blocks = []
    for module, group in _by_module(all_specs).items():
        members = [s.name for s in group] + EXTRA_MEMBERS.get(module, [])
        blocks.append(
            f"## {SECTIONS[module]}\n\n::: kconstraints.{module}\n    options:\n"
            f"      show_root_heading: false\n      members: [{', '.join(members)}]"
        )
    return "\n\n".join(blocks)


def init_imports(all_specs):
    """One import per module, as `ruff format` writes it (the block is outside isort's reach)."""
    lines = []
    for module, group in sorted(_by_module(all_specs).items()):
        names = sorted(s.name for s in group)
        line = f"from kconstraints.{module} import {', '.join(names)}"
        if len(line) > 100:
            line = (
                f"from kconstraints.{module} import (\n"
                + "".join(f"    {n},\n" for n in names)
                + ")"
            )
        lines.append(line)
    return "\n".join(lines)


def init_all(all_specs):
    names = sorted(s.name for s in all_specs)
    return "_CONSTRAINTS = [\n" + "".join(f'    "{n}",\n' for n in names) + "]"


# file -> [(block name, generator, comment style)]
BLOCKS = {
    "README.md": [("constraints", readme_table, "html")],
    "docs/index.md": [("families", index_table, "html"), ("not-exact", not_exact_list, "html")],
    "docs/getting-started.md": [("uses", uses_table, "html")],
    "docs/reference/constraints.md": [("sections", reference_sections, "html")],
    "kconstraints/__init__.py": [
        ("imports", init_imports, "python"),
        ("names", init_all, "python"),
    ],
}


def _markers(name, style):
    if style == "python":
        return f"# catalogue:{name}\n", f"# /catalogue:{name}\n"
    return f"<!-- catalogue:{name} -->\n", f"<!-- /catalogue:{name} -->\n"


def render(path, text, all_specs):
    """`text` with each of `path`'s blocks rewritten; a missing marker is an error."""
    for name, generate, style in BLOCKS[path]:
        start, end = _markers(name, style)
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{path}: no {start.strip()} ... {end.strip()} block")
        block = start + generate(all_specs) + "\n" + end
        text = pattern.sub(lambda _, block=block: block, text, count=1)
    return text


def stale_files():
    """The files whose blocks differ from the registry, with the text they should hold."""
    all_specs = specs()
    out = {}
    for path in BLOCKS:
        current = (ROOT / path).read_text()
        wanted = render(path, current, all_specs)
        if wanted != current:
            out[path] = wanted
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files, write nothing")
    args = parser.parse_args(argv)
    stale = stale_files()
    for path, text in stale.items():
        if args.check:
            print(f"{path} is out of date with the registry")
        else:
            (ROOT / path).write_text(text)
            print(f"wrote {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
