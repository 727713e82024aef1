"""mkdocs hook: show the committed benchmark results on the benchmarks page.

Each folder `benchmarks/results/<device>/` holds the `README.md` and PNG plots
that `python -m benchmarks` drew from its pytest-benchmark JSON files (one per
backend). The PNGs are added to the site as they are (no copy under docs/),
and each README is appended to `benchmarks.md` in place of the marker, its
headings two levels down and its image links pointed at those files.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "results"
MARKER = "<!-- benchmark results -->"
SITE_FOLDER = "benchmark-results"


def _folders():
    if not RESULTS.is_dir():
        return []
    # GPU runs first: they are what the accelerator benchmark is for.
    found = [p for p in RESULTS.iterdir() if (p / "README.md").is_file()]
    return sorted(found, key=lambda p: (not p.name.startswith("gpu"), p.name))


def on_files(files, config):
    for folder in _folders():
        for png in sorted(folder.glob("*.png")):
            uri = f"{SITE_FOLDER}/{folder.name}/{png.name}"
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def _section(folder):
    text = (folder / "README.md").read_text()
    text = re.sub(r"\A# .*\n", "", text)
    text = re.sub(r"^(#+) ", r"##\1 ", text, flags=re.MULTILINE)
    text = re.sub(r"\]\(([\w.-]+\.png)\)", rf"]({SITE_FOLDER}/{folder.name}/\1)", text)
    return f"### {folder.name}\n\nFrom `benchmarks/results/{folder.name}/`.\n{text}"


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    sections = [_section(f) for f in _folders()]
    body = "\n".join(sections) or "No benchmark results are committed yet."
    return markdown.replace(MARKER, body)
