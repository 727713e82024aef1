"""The package's structure: no import circle, public modules with an `__all__`, short docstrings.

Read from the source with `ast`, so imports inside functions count too.
"""

import ast
import importlib
import pathlib

import pytest

import kconstraints

PACKAGE = pathlib.Path(kconstraints.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
PUBLIC = [m for m in MODULES if not m.startswith("_")]


def _tree(module):
    return ast.parse((PACKAGE / f"{module}.py").read_text())


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
        found |= {n.split(".")[1] for n in names if n.startswith("kconstraints.")}
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
    assert set(mod.__all__) == public, f"{module}.py: __all__ differs from its public names"
    assert all(hasattr(mod, n) for n in mod.__all__)


def test_the_public_modules_are_the_ones_expected():
    assert "simplex" in PUBLIC and "callbacks" in PUBLIC and "_kernels" not in PUBLIC
    assert "threshold" in _top_level_names("_kernels")  # the kernels left simplex.py
    assert not {"threshold", "simplex_threshold"} & _top_level_names("simplex")


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
