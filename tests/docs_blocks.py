"""The code blocks of a Markdown document and how the docs test runs each one.

Every ``python`` block must say how it runs, in an HTML comment (invisible on
GitHub and in the built docs) on the line before its fence::

    <!-- docs-test: background until="consuming" expect="Received" -->
    <!-- docs-test: run expect="HELLO!" -->
    <!-- docs-test: file -->

- ``run``: executed as a script; must exit 0 within the timeout, and its output
  must match ``expect`` (a regular expression) when given.
- ``background``: a program that blocks (an agent). Started, and the test waits
  until its output matches ``until``; at the end of the document it gets
  SIGTERM and must exit 0, with its output matching ``expect`` when given.
- ``file``: written to disk only, for later blocks to import or read.

A block may also be another language marked the same way (a ``bash`` block with
``run`` is run by bash; a ``proto`` block with ``file`` is written out). A block
whose first line is a comment naming a file (``# shout_agent.py``,
``// shop/orders.proto``) is written under that name, so later blocks can import
it as a user would; otherwise it is ``block_<n>.<ext>``. Blocks run in document
order, in one directory per document.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^```(\w+)?\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
_NAMED = re.compile(r"^(?:#|//)\s*([\w./-]+\.(?:py|proto|sh|toml|txt))\s*$")
MODES = ("run", "background", "file")
_EXTENSIONS = {"python": "py", "bash": "sh", "proto": "proto", "toml": "toml"}


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    mode: str | None  # None: no marker
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    def file_name(self, index: int) -> str:
        first = self.code.splitlines()[0] if self.code else ""
        named = _NAMED.match(first)
        if named:
            return named.group(1)
        return f"block_{index}.{_EXTENSIONS.get(self.language, 'txt')}"


def parse_marker(text: str) -> tuple[str, dict[str, str]]:
    """``run expect="x y"`` -> ("run", {"expect": "x y"})."""
    words = shlex.split(text)
    if not words or words[0] not in MODES:
        raise ValueError(f"docs-test marker {text!r}: the first word must be one of {MODES}")
    options: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"docs-test marker {text!r}: {word!r} is not key=value")
        options[key] = value
    return words[0], options


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the docs-test marker before it, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    marker: tuple[str, dict[str, str]] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        match = _MARKER.match(stripped)
        if match:
            marker = parse_marker(match.group(1))
            i += 1
            continue
        fence = _FENCE.match(stripped)
        if fence and stripped.startswith("```") and line.startswith(("```", " ")):
            indent = len(line) - len(line.lstrip())
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i][indent:])
                i += 1
            mode, options = marker if marker else (None, {})
            found.append(
                Block(
                    document=path.name,
                    line=start + 1,
                    language=fence.group(1) or "",
                    code="\n".join(body) + "\n",
                    mode=mode,
                    options=options,
                )
            )
            marker = None
        elif stripped:
            marker = None  # a marker belongs to the fence right after it
        i += 1
    return found
