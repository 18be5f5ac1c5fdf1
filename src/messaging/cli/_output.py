"""How the CLI writes: wire values as inert text, JSON lines for scripts, no wrapping in pipes.

Three rules, because what a command prints comes partly from strangers (any
producer on the broker chooses its message ids, types and headers):

- Nothing is ever parsed as Rich markup (the console has markup off) and every
  control character (ESC, BEL, CR, the C1 range, bidi overrides) is shown as a
  visible escape such as ``\\x1b``: a message id cannot crash the command,
  recolour the terminal, move the cursor or hide text.
- ``--json`` prints one JSON object per line on stdout and nothing else there
  (notes go to stderr), for ``jq`` and scripts.
- When stdout is not a terminal, text output is plain lines that never wrap
  (tables become tab-separated rows), so ``| grep`` sees a whole record.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="One JSON object per line on stdout, for scripts and jq."),
]

# C0 and C1 control characters, DEL, and the Unicode marks that reorder or hide
# text on a terminal (bidi embeddings, overrides and isolates; zero-width marks).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(value: object) -> str:
    """``value`` as one line of inert text: control characters become ``\\xNN`` escapes."""
    text = value if isinstance(value, str) else str(value)
    return _UNSAFE.sub(_visible, text)


Part = str | tuple[str, str]
"""Plain text, or (text, Rich style): styles are ours, the text is always made safe."""


def text(*parts: Part) -> Text:
    """A Rich Text from parts; the text of every part goes through :func:`safe`."""
    out = Text()
    for part in parts:
        if isinstance(part, tuple):
            out.append(safe(part[0]), style=part[1])
        else:
            out.append(safe(part))
    return out


def make_console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A console that never interprets markup or emoji and, off a terminal, never wraps."""
    console = Console(
        file=file,
        stderr=stderr,
        markup=False,
        emoji=False,
        highlight=False,
    )
    console.soft_wrap = not console.is_terminal
    return console


class Output:
    """One command's stdout: text for people (tables on a terminal) or JSON lines."""

    def __init__(self, as_json: bool = False) -> None:
        self.as_json = as_json
        self.console = make_console()
        self.errors = make_console(stderr=True)

    @property
    def is_terminal(self) -> bool:
        return self.console.is_terminal

    def line(self, *parts: Part) -> None:
        """A line of text on stdout."""
        self.console.print(text(*parts))

    def note(self, *parts: Part) -> None:
        """Progress and summaries; stderr in JSON mode, so stdout stays pure JSON lines."""
        (self.errors if self.as_json else self.console).print(text(*parts))

    def show(self, renderable: RenderableType) -> None:
        """A Rich renderable built from :func:`text` parts (panels, groups)."""
        self.console.print(renderable)

    def record(self, data: Mapping[str, Any]) -> None:
        """One JSON object on one line. ASCII-only: a control character cannot leak."""
        sys.stdout.write(json.dumps(data, default=str, ensure_ascii=True) + "\n")
        sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Part]]) -> None:
        """A table on a terminal; tab-separated lines (header first) anywhere else."""
        if self.is_terminal:
            table = Table(*columns)
            for row in rows:
                table.add_row(*(text(cell) for cell in row))
            self.console.print(table)
            return
        # Written as they are: Rich would expand the tabs into spaces.
        out = self.console.file
        out.write("\t".join(safe(column) for column in columns) + "\n")
        for row in rows:
            # safe() turns a tab inside a value into \x09, so columns stay columns.
            cells = [safe(cell[0] if isinstance(cell, tuple) else cell) for cell in row]
            out.write("\t".join(cells) + "\n")
        out.flush()


__all__ = ["JsonOption", "Output", "Part", "make_console", "safe", "text"]
