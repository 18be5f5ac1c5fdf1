"""The constructors the user docs spell out are the code's, parameter for parameter."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

import messaging
import messaging.aio

ROOT = Path(__file__).resolve().parents[2]


def parameters(signature: str) -> list[str]:
    """``(a, b=(1, 2), *, c="x,y")`` -> ["a", "b", "*", "c"]: top-level names only."""
    names, depth, quote, current = [], 0, "", ""
    for char in signature.strip()[1:-1] + ",":
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            names.append(current.split("=")[0].strip())
            current = ""
            continue
        current += char
    return [name for name in names if name]


def code_parameters(cls: type) -> list[str]:
    """The parameters a caller can name, ``**options: Unpack[SomeTypedDict]`` expanded
    into the TypedDict's keys (keyword-only, in the order it declares them)."""
    found = []
    hints = typing.get_type_hints(cls.__init__, include_extras=True)  # type: ignore[misc]
    for param in list(inspect.signature(cls).parameters.values()):
        if param.kind is param.VAR_KEYWORD:
            (options,) = typing.get_args(hints[param.name])
            names = list(options.__annotations__)
        else:
            names = [param.name]
        keyword_only = param.kind in (param.KEYWORD_ONLY, param.VAR_KEYWORD)
        if keyword_only and "*" not in found:
            found.append("*")
        found.extend(names)
    return found


def readme_table() -> dict[str, str]:
    rows = re.findall(r"^\| `(\w+)` \| `(\([^|]*\))`", (ROOT / "README.md").read_text(), re.M)
    return dict(rows)


@pytest.mark.parametrize(
    "cls",
    [
        messaging.aio.AsyncConnectionPool,
        messaging.aio.AsyncEventPublisher,
        messaging.aio.AsyncEventSubscriber,
        messaging.aio.AsyncBaseAgent,
    ],
)
def test_the_readme_asyncio_table_lists_each_constructor_parameter(cls: type) -> None:
    documented = readme_table().get(cls.__name__)
    assert documented, f"README's asyncio table has no row for {cls.__name__}"
    assert parameters(documented) == code_parameters(cls)


def test_base_agent_md_spells_out_the_constructor() -> None:
    text = (ROOT / "BASE_AGENT.md").read_text()
    block = re.search(r"```text\n(BaseAgent\(.*?\))\n```", text, re.S)
    assert block, "BASE_AGENT.md's Constructing block is gone"
    documented = block.group(1)[len("BaseAgent") :]
    assert parameters(documented) == code_parameters(messaging.BaseAgent)


def test_the_parameter_reader_respects_nesting_and_quotes() -> None:
    assert parameters('(a, b=("#",), *, c="x,y", d=())') == ["a", "b", "*", "c", "d"]
