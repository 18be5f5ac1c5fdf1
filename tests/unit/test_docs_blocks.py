"""Every Python block of the user docs says how the docs test runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs_blocks import blocks, parse_marker

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "BASE_AGENT.md"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_python_block_is_run_by_the_docs_test(document: str) -> None:
    found = blocks(ROOT / document)
    python = [block for block in found if block.language == "python"]
    assert python, f"no python blocks found in {document}: the parser is broken"
    unmarked = [block.where for block in python if block.mode is None]
    assert not unmarked, (
        f"python blocks without a <!-- docs-test: ... --> marker: {unmarked}; say how "
        "tests/integration/test_docs_run.py runs them (see tests/docs_blocks.py)"
    )


def test_a_marker_reads_its_mode_and_options() -> None:
    assert parse_marker('background until="consuming my_agent" expect=Received') == (
        "background",
        {"until": "consuming my_agent", "expect": "Received"},
    )
    with pytest.raises(ValueError, match="first word"):
        parse_marker("skip")
    with pytest.raises(ValueError, match="key=value"):
        parse_marker("run expect")


def test_the_parser_finds_marked_and_unmarked_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n<!-- docs-test: run expect=hi -->\n```python\n# hello.py\nprint('hi')\n```\n\n"
        "```python\nx = 1\n```\n\n<!-- docs-test: file -->\n\nnot the fence\n```proto\n```\n",
        encoding="utf-8",
    )
    first, second, third = blocks(doc)
    assert (first.mode, first.options, first.file_name(0)) == ("run", {"expect": "hi"}, "hello.py")
    assert first.code == "# hello.py\nprint('hi')\n"
    assert (second.mode, second.file_name(1)) == (None, "block_1.py")
    assert third.mode is None, "a marker separated from its fence by text does not count"
