"""What the CLI does to text from the wire before a terminal sees it. Pure."""

from __future__ import annotations

import pytest

from messaging.cli._output import safe, text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain id-1", "plain id-1"),
        ("[bold]not markup[/]", "[bold]not markup[/]"),
        ("\x1b[2J", "\\x1b[2J"),
        ("bell\x07", "bell\\x07"),
        ("a\r\nb\tc", "a\\x0d\\x0ab\\x09c"),
        ("c1\x9bcsi", "c1\\x9bcsi"),
        ("del\x7f", "del\\x7f"),
        ("bidi\u202egnp.exe", "bidi\\u202egnp.exe"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("unicode ok: Zürich €", "unicode ok: Zürich €"),
        (42, "42"),
    ],
)
def test_safe_makes_control_characters_visible(value: object, shown: str) -> None:
    assert safe(value) == shown


def test_text_never_parses_markup_and_keeps_styles_ours() -> None:
    line = text(("ok", "green"), " [red]id\x1b[0m[/]")
    assert line.plain == "ok [red]id\\x1b[0m[/]"
    assert [str(span.style) for span in line.spans] == ["green"]
