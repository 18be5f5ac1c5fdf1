"""`chimera-bus agents`: the running agents, as they announce themselves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from messaging.cli._broker import UrlOption, fail_with, open_broker, run
from messaging.cli._output import JsonOption, Output, Part
from messaging.config import DiscoveryConfig, load_config
from messaging.discovery import AgentCard, listen
from messaging.errors import ConfigurationError

HELP = """\
List the running subscribers and agents that announce themselves.

Agents announce only with DISCOVERY__ENABLED=true (README, "Discovery"):
a card on the discovery exchange (DISCOVERY__EXCHANGE, default
chimera.discovery) when they start, every DISCOVERY__INTERVAL seconds (5)
after that, and a withdrawal when they stop cleanly. This command listens
for --wait seconds (default: one interval and a half, enough to hear each
live agent's next heartbeat) and lists what it heard; a crashed agent stops
being heard at once, and a listener that keeps running forgets it after 3
intervals.

A table on a terminal; tab-separated lines when piped; --json: one card per
line, as announced (the schema is in messaging.discovery.card). Exit 0 also
when nothing was heard (a note on stderr says so).
"""

COLUMNS = ["name", "version", "host", "pid", "queue", "routing keys", "takes", "up", "instance"]


def discovery_settings() -> DiscoveryConfig:
    try:
        return load_config().discovery
    except ConfigurationError as exc:
        fail_with(exc)


async def collect(wait: float, exchange: str) -> list[AgentCard]:
    async with open_broker() as broker:
        return await listen(broker.pool, wait, exchange)


def uptime(card: AgentCard, now: datetime) -> str:
    seconds = max(0, int((now - card.since).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def cells(card: AgentCard, now: datetime) -> list[Part]:
    takes = ", ".join(sorted(set(card.request_types.values())))
    return [
        (card.name, "bold"),
        card.version or "-",
        card.host,
        str(card.pid),
        card.queue,
        " ".join(card.routing_keys),
        takes or "-",
        uptime(card, now),
        (card.instance, "dim"),
    ]


def agents(
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            "-w",
            min=0.1,
            help="Seconds to listen (default: 1.5 x DISCOVERY__INTERVAL).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Only agents of this name.")
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange", "-e", help="Only agents on this events exchange.", show_default=False
        ),
    ] = None,
    discovery_exchange: Annotated[
        str | None,
        typer.Option(
            "--discovery-exchange",
            help="Where agents announce (default: DISCOVERY__EXCHANGE, else chimera.discovery).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    settings = discovery_settings()
    listened = wait if wait is not None else settings.interval * 1.5
    heard = run(collect(listened, discovery_exchange or settings.exchange))
    found = [
        card
        for card in heard
        if (name is None or card.name == name) and (exchange is None or card.exchange == exchange)
    ]
    out = Output(as_json)
    if as_json:
        for card in found:
            out.record(card.to_dict())
    elif found:
        now = datetime.now(UTC)
        out.table(COLUMNS, [cells(card, now) for card in found])
    if not found:
        out.note(
            (
                f"no agent announced itself within {listened:g}s (agents announce only with "
                f"DISCOVERY__ENABLED=true)",
                "dim",
            )
        )
