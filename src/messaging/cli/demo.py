"""`chimera-bus demo`: the three agents answering questions end to end."""

from __future__ import annotations

from typing import Annotated

import typer

from messaging.cli._broker import fail


def demo(
    questions: Annotated[
        list[str] | None,
        typer.Option(
            "--questions",
            "-q",
            help="A question to ask; repeat for more (default: the demo's own questions).",
        ),
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange",
            "-e",
            help="Exchange to use and keep (default: a fresh chimera.demo.<id>, deleted after).",
        ),
    ] = None,
) -> None:
    """Run the query, data and analysis agents and a client asking questions, then exit.

    Prints each step with its correlation id and the answers; exits 0 when
    every question was answered.
    """
    try:
        # Imported here: the demo pulls in the agents, which no other command needs.
        from messaging.demo.pipeline import run_demo
    except ModuleNotFoundError as exc:
        if exc.name not in ("messaging.demo", "messaging.demo.pipeline"):
            raise
        fail("the demo is not installed in this version (no module messaging.demo.pipeline)")
    if exchange is None:
        code = run_demo(questions or None)
    else:
        code = run_demo(questions or None, exchange=exchange)
    raise typer.Exit(code)
