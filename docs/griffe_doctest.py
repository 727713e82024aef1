"""Griffe extension for the API reference: doctest examples render as code.

The docstrings put their `>>>` examples under a plain "Example:" line (the
layout doctest reads, and the docstring contract in CONTRIBUTING.md), which
Google-style parsing leaves as text, so Markdown would read `[0.0, 2.0]` as
a link. This wraps each run of doctest lines (prompts, continuations and the
expected output that follows) in a `pycon` code fence before the docstrings are parsed.
"""

from __future__ import annotations

import re

import griffe

PROMPT = re.compile(r"^\s*(>>>|\.\.\.)( |$)")


def fence_doctests(text: str) -> str:
    out, block = [], []
    for line in [*text.splitlines(), ""]:
        if PROMPT.match(line) or (block and line.strip()):
            block.append(line)
            continue
        if block:
            indent = re.match(r"\s*", block[0]).group()
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            block = []
        out.append(line)
    return "\n".join(out[:-1])


class DoctestFences(griffe.Extension):
    def on_package(self, *, pkg, **kwargs):
        self._walk(pkg)

    def _walk(self, obj):
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member)
