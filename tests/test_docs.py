"""The documentation (docs/ and README.md): its Python runs, its includes and links resolve.

The ```python blocks of one page run in order in one namespace, as a reader
would run them, in a temporary folder (some save a model). A block that only
includes a file (`--8<-- "examples/NAME.py"`, mkdocs snippets) is checked to
resolve here; the example scripts themselves run in `tests/test_examples.py`.
Docstring examples run as doctests (`--doctest-modules`).
"""

import pathlib
import re
import sys
import types

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# A snippets include line; an optional ":section" or ":start:end" may follow the path.
INCLUDE = re.compile(r'^\s*--8<--\s+"([^":]+)(?::[^"]*)?"\s*$', re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# A file of the repository named in backquotes, e.g. `tests/test_fit.py`.
NAMED_FILE = re.compile(
    r"`((?:benchmarks|docs|examples|kconstraints|tests)/[a-z0-9_./-]+\.(?:json|md|py|txt))`"
)


def _page(path):
    text = path.read_text()
    runnable = [block for block in FENCE.findall(text) if not INCLUDE.search(block)]
    return {"runnable": runnable, "includes": INCLUDE.findall(text), "text": text}


PAGES = {
    str(p.relative_to(ROOT)): _page(p)
    for p in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
}
WITH_CODE = [page for page, found in PAGES.items() if found["runnable"]]
GUIDES = sorted(page for page in PAGES if page.startswith("docs/guides/"))


def _nav():
    """The pages listed in mkdocs.yml's nav, relative to the repository root."""
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:\n") :]
    return [f"docs/{page}" for page in re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, re.MULTILINE)]


def test_the_nav_and_the_docs_folder_hold_the_same_pages():
    nav = _nav()
    assert len(nav) == len(set(nav)), "a page is listed twice"
    on_disk = {page for page in PAGES if page.startswith("docs/")}
    assert set(nav) - on_disk == set(), "listed in mkdocs.yml but missing"
    assert on_disk - set(nav) == set(), "in docs/ but not in mkdocs.yml's nav"


def test_the_landing_page_lists_every_guide():
    listed = set(re.findall(r"\]\((guides/[\w.-]+\.md)\)", PAGES["docs/index.md"]["text"]))
    assert {f"docs/{page}" for page in listed} == set(GUIDES)


@pytest.mark.parametrize("guide", GUIDES)
def test_every_guide_has_runnable_code_or_an_included_example(guide):
    found = PAGES[guide]
    examples = [path for path in found["includes"] if path.startswith("examples/")]
    assert found["runnable"] or examples, f"{guide} has neither ```python code nor an example"


def test_includes_resolve_to_files_in_the_repository():
    includes = [(page, path) for page, found in PAGES.items() for path in found["includes"]]
    assert includes, "no page includes an example: the pattern no longer matches"
    for page, path in includes:
        target = (ROOT / path).resolve()
        assert target.is_relative_to(ROOT) and target.is_file(), f"{page}: {path}"


def test_include_blocks_hold_nothing_but_includes():
    """A fenced block mixing code and an include would neither run here nor render whole."""
    for page, found in PAGES.items():
        for block in FENCE.findall(found["text"]):
            if INCLUDE.search(block):
                assert INCLUDE.sub("", block).strip() == "", page


def test_every_example_script_is_shown_by_a_guide():
    """Each example exists once, as its guide's code; demo.py is `nox -s demo`."""
    shown = {path for guide in GUIDES for path in PAGES[guide]["includes"]}
    scripts = {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")}
    assert scripts - {"examples/demo.py"} <= shown, sorted(scripts - shown)


@pytest.mark.parametrize("page", ["README.md", "CONTRIBUTING.md"])
def test_relative_links_outside_the_docs_resolve(page):
    """mkdocs --strict checks the links inside docs/; nothing else checks these."""
    links = [link for link in LINK.findall(PAGES[page]["text"]) if "://" not in link]
    assert links, f"{page} links into the docs"
    for link in links:
        assert (ROOT / link).exists(), link


def test_files_named_in_the_documentation_exist():
    """A renamed module or test file leaves no stale name behind in the prose."""
    for page, found in PAGES.items():
        for path in NAMED_FILE.findall(found["text"]):
            assert (ROOT / path).is_file(), f"{page} names {path}"


@pytest.mark.parametrize("page", WITH_CODE)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # As a reader runs it: a script, a module of its own (torch.compile looks a
    # function's globals up by its module's name in sys.modules).
    script = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", script)
    namespace = script.__dict__
    try:
        for i, code in enumerate(PAGES[page]["runnable"]):
            exec(compile(code, f"{page} (python block {i + 1})", "exec"), namespace)
    finally:
        keras.utils.clear_session()
