"""Every Python example of the documentation (docs/ and README.md) runs on the active backend.

The blocks of one page run in order in one namespace, as a reader would run
them, in a temporary folder (some save a model). Docstring examples run as
doctests (`--doctest-modules`).
"""

import pathlib
import re

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
PAGES = {
    str(p.relative_to(ROOT)): FENCE.findall(p.read_text())
    for p in [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
}
WITH_CODE = {page: blocks for page, blocks in PAGES.items() if blocks}


def test_every_guide_has_a_runnable_example():
    guides = [p for p in PAGES if p.startswith("docs/guides/")]
    assert len(guides) >= 6 and all(p in WITH_CODE for p in guides), sorted(PAGES)


@pytest.mark.parametrize("page", WITH_CODE, ids=WITH_CODE)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}  # as a reader runs it: a script
    try:
        for i, code in enumerate(WITH_CODE[page]):
            exec(compile(code, f"{page} (python block {i + 1})", "exec"), namespace)
    finally:
        keras.utils.clear_session()
