"""`chimera-bus demo`: the three agents answering questions end to end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Literal, cast

import typer

from messaging.cli._broker import UrlOption, fail


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
    url: UrlOption = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            "-b",
            help=(
                "rabbitmq: agents as processes on the RabbitMQ of RABBITMQ__*; memory: agents "
                "as threads on the in-process broker, no RabbitMQ needed (default: what "
                "RABBITMQ__URL says, else rabbitmq)."
            ),
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
    if broker not in (None, "rabbitmq", "memory"):
        fail(f"--broker must be rabbitmq or memory, not {broker!r}")
    chosen = cast('Literal["rabbitmq", "memory"] | None', broker)
    with broker_url(url):
        code = run_demo(questions or None, exchange=exchange, broker=chosen)
    raise typer.Exit(code)


@contextmanager
def broker_url(url: str | None) -> Iterator[None]:
    """``--url`` as RABBITMQ__URL while the demo runs: its agents read the environment."""
    if url is None:
        yield
        return
    before = os.environ.get("RABBITMQ__URL")
    os.environ["RABBITMQ__URL"] = url
    try:
        yield
    finally:
        if before is None:
            del os.environ["RABBITMQ__URL"]
        else:
            os.environ["RABBITMQ__URL"] = before
