"""The package's structure: no import circle, public modules with an `__all__`, short docstrings.

Read from the source with `ast`, so imports inside functions count too.
"""

import ast
import importlib
import pathlib

import pytest

import kconstraints

PACKAGE = pathlib.Path(kconstraints.__file__).parent


def _dotted(path):
    """`testing/_check.py` -> `testing._check`, `testing/__init__.py` -> `testing`."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Every module below kconstraints/, subpackages too (kconstraints.testing).
MODULES = sorted(_dotted(p) for p in PACKAGE.rglob("*.py") if _dotted(p))
PUBLIC = [m for m in MODULES if not m.rpartition(".")[2].startswith("_")]
SUBPACKAGES = {m for m in MODULES if (PACKAGE / m.replace(".", "/")).is_dir()}


def _tree(module):
    path = PACKAGE / module.replace(".", "/")
    return ast.parse(
        (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
    )


def _module_of(name):
    """The package module an imported dotted name lies in (`kconstraints.testing._check.Input`)."""
    rest = name.removeprefix("kconstraints.")
    found = [m for m in MODULES if rest == m or rest.startswith(m + ".")]
    return max(found, key=len) if found else None


def _imports(module):
    """The package's modules that `module` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {_module_of(n) for n in names if n.startswith("kconstraints.")}
    return found & set(MODULES) - {module}


def _cycle(graph):
    """One import circle of `graph` (module -> modules it imports) as a list, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt, [*path, nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_circle_inside_the_package():
    graph = {m: _imports(m) for m in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _top_level_names(module):
    """The names a module defines at its top level: functions, classes, assignments."""
    names = set()
    for node in _tree(module).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names - {"__all__"}


@pytest.mark.parametrize("module", PUBLIC)
def test_a_public_module_exports_exactly_its_public_names(module):
    mod = importlib.import_module(f"kconstraints.{module}")
    public = {n for n in _top_level_names(module) if not n.startswith("_")}
    assert hasattr(mod, "__all__"), f"{module}.py has no __all__"
    if module not in SUBPACKAGES:  # a package's __init__ re-exports its modules' names
        assert set(mod.__all__) == public, f"{module}.py: __all__ differs from its public names"
    assert all(hasattr(mod, n) for n in mod.__all__)


def test_the_public_modules_are_the_ones_expected():
    assert "simplex" in PUBLIC and "callbacks" in PUBLIC and "_kernels" not in PUBLIC
    assert "threshold" in _top_level_names("_kernels")  # the kernels left simplex.py
    assert not {"threshold", "simplex_threshold"} & _top_level_names("simplex")
    assert {"testing", "testing._check", "testing.__main__"} <= set(MODULES)
    assert "testing" in PUBLIC and "testing._check" not in PUBLIC
    assert _imports("testing._check") >= {"_backend", "testing._inputs"}


def long_docstrings(module, limit=40):
    """`(name, lines)` of each module, class or function docstring over `limit` lines."""
    tree = _tree(module)
    nodes = [tree] + [
        n
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    found = []
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc.splitlines()) > limit:
            found.append((getattr(node, "name", module), len(doc.splitlines())))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_no_docstring_is_over_40_lines(module):
    found = long_docstrings(module)
    assert not found, f"{module}.py: docstrings over 40 lines: {found}"


def test_the_docstring_finder_finds_what_it_looks_for():
    assert ("_constants", 4) in long_docstrings("_constants", limit=3)  # the module's own
    assert ("conv_grid", 10) in long_docstrings("_grid", limit=9)
    assert not long_docstrings("_grid", limit=1000)
