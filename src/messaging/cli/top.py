"""`chimera-bus top`: a live view of the agents' queues, refreshed every second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table

from messaging.cli._admin import Target
from messaging.cli._broker import UrlOption, open_broker, run
from messaging.cli._output import JsonOption, Output, Part, text
from messaging.cli._stats import QueueStats, Snapshot, open_stats, take
from messaging.cli.status import ManagementOption

HELP = """\
A live view of the agents' queues, refreshed every second until Ctrl-C.

Ready and unacked messages, consumers, publish and deliver rates (messages
per second), and DLQ depth, redrawn every --interval seconds; works in any
terminal, over SSH too.

Without --queue it shows every queue with a <queue>.dlq beside it (the bus's
work queues). Numbers come from the management API when it answers (at
--management-url, default http://<host>:15672), else rabbitmqctl on the
broker's machine (no rates), else AMQP alone (ready and consumers of the
--queue names only); the footer says which, and what it cannot show.

--once prints one snapshot and exits (a table on a terminal, tab-separated
lines when piped, one JSON object per queue with --json); so does any run
whose stdout is not a terminal.
"""

COLUMNS = ["queue", "ready", "unacked", "consumers", "publish/s", "deliver/s", "dlq"]


def cells(stats: QueueStats) -> list[Part]:
    def count(value: int | None) -> str:
        return "-" if value is None else str(value)

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    missing = stats.ready is None and stats.consumers is None
    return [
        (stats.name, "red") if missing else stats.name,
        ("missing", "red") if missing else count(stats.ready),
        count(stats.unacked),
        (count(stats.consumers), "yellow") if stats.consumers == 0 else count(stats.consumers),
        rate(stats.publish_rate),
        rate(stats.deliver_rate),
        (count(stats.dlq), "red") if stats.dlq else count(stats.dlq),
    ]


def render(snapshot: Snapshot, broker: str, interval: float) -> RenderableType:
    table = Table(*COLUMNS, expand=False)
    for column in table.columns[1:]:
        column.justify = "right"
    for stats in snapshot.queues:
        table.add_row(*(text(cell) for cell in cells(stats)))
    if not snapshot.queues:
        table.add_row(text(("no agent queues (none has a .dlq beside it)", "dim")))
    footer = [text((f"numbers from {snapshot.source}", "dim"))]
    if snapshot.missing:
        footer.append(text((snapshot.missing, "dim")))
    header = text(
        ("chimera-bus top", "bold"),
        f"  {broker}  {time.strftime('%H:%M:%S')}  every {interval:g}s  Ctrl-C to quit",
    )
    return Group(header, table, *footer)


def record(stats: QueueStats) -> dict[str, object]:
    return {
        "queue": stats.name,
        "ready": stats.ready,
        "unacked": stats.unacked,
        "consumers": stats.consumers,
        "publish_rate": stats.publish_rate,
        "deliver_rate": stats.deliver_rate,
        "dlq": stats.dlq,
    }


async def watch(
    out: Output,
    queues: list[str] | None,
    interval: float,
    once: bool,
    management_url: str | None,
) -> None:
    async with open_broker() as broker:
        target = Target.of(broker.node, management_url)
        source, snapshot = await open_stats(broker, target, queues)
        if once:
            print_once(out, snapshot)
            return
        url = broker.config.safe_url()
        with Live(console=out.console, screen=True, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                live.update(render(snapshot, url, interval), refresh=True)
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
                snapshot = await take(source, queues)


def print_once(out: Output, snapshot: Snapshot) -> None:
    if out.as_json:
        for stats in snapshot.queues:
            out.record({**record(stats), "source": snapshot.source})
        return
    out.table(COLUMNS, [cells(stats) for stats in snapshot.queues])
    out.note((f"numbers from {snapshot.source}", "dim"))
    if snapshot.missing:
        out.note((snapshot.missing, "dim"))


def top(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A work queue to show; repeat for more."),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", "-i", min=0.2, help="Seconds between refreshes.")
    ] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
    as_json: JsonOption = False,
    management_url: ManagementOption = None,
    url: UrlOption = None,
) -> None:
    out = Output(as_json)
    once = once or as_json or not out.is_terminal
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how top ends
        run(watch(out, queue or None, interval, once, management_url))
