"""`chimera-bus status`: is the broker up, do the exchange and queues exist, is anything failing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from messaging.cli._broker import (
    DEFAULT_EXCHANGE,
    EXIT_PROBLEM,
    ExchangeOption,
    QueueInfo,
    console,
    open_broker,
    run,
)
from messaging.topology import dlq_name

HELP = """\
Check the broker, the exchange and each --queue (with its DLQ <queue>.dlq).

Something is WRONG, and the exit code is 1, when:
the exchange does not exist; a queue does not exist; a queue has 0 consumers
(nobody is handling it); a queue has no DLQ (failed messages would be lost);
a DLQ holds messages (something failed).

Exit 0: all good. Exit 2: the check could not run (broker unreachable, login
or vhost refused, bad configuration).
"""


@dataclass
class QueueRow:
    name: str
    queue: QueueInfo | None
    dlq: QueueInfo | None
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    broker: str
    exchange: str
    exchange_exists: bool
    rows: list[QueueRow]

    @property
    def problems(self) -> list[str]:
        found = [] if self.exchange_exists else [f"exchange {self.exchange} does not exist"]
        return found + [f"{row.name}: {p}" for row in self.rows for p in row.problems]


def judge(name: str, queue: QueueInfo | None, dlq: QueueInfo | None) -> QueueRow:
    row = QueueRow(name, queue, dlq)
    if queue is None:
        row.problems.append("queue does not exist")
    elif queue.consumers == 0:
        row.problems.append("no consumers")
    if dlq is None:
        row.problems.append(f"no DLQ {dlq_name(name)} (dead letters are dropped)")
    elif dlq.messages > 0:
        row.problems.append(f"{dlq.messages} dead letter(s)")
    return row


async def collect(queues: list[str], exchange: str) -> Report:
    async with open_broker() as broker:
        exists = await broker.exchange_exists(exchange)
        rows = [judge(q, await broker.queue(q), await broker.queue(dlq_name(q))) for q in queues]
        return Report(broker.config.safe_url(), exchange, exists, rows)


def status(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A work queue to check; repeat for more."),
    ] = None,
    exchange: ExchangeOption = DEFAULT_EXCHANGE,
) -> None:
    report = run(collect(queue or [], exchange))
    out = console()
    out.print(f"[green]broker[/]    {escape(report.broker)}  reachable")
    if report.exchange_exists:
        out.print(f"[green]exchange[/]  {escape(report.exchange)}  exists")
    else:
        out.print(f"[red]exchange[/]  {escape(report.exchange)}  MISSING")
    if report.rows:
        table = Table("queue", "messages", "consumers", "dlq", "status")
        for row in report.rows:
            table.add_row(
                escape(row.name),
                _count(row.queue, messages=True),
                _count(row.queue, messages=False),
                _count(row.dlq, messages=True),
                f"[red]{escape('; '.join(row.problems))}[/]" if row.problems else "[green]ok[/]",
            )
        out.print(table)
    problems = report.problems
    if problems:
        out.print(f"[bold red]WRONG[/]: {len(problems)} problem(s)")
        raise typer.Exit(EXIT_PROBLEM)
    out.print("[bold green]OK[/]")


def _count(info: QueueInfo | None, *, messages: bool) -> str:
    if info is None:
        return "[red]missing[/]"
    return str(info.messages if messages else info.consumers)
