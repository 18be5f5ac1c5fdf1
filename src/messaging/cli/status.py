"""`chimera-bus status`: is the broker up, do the exchange and queues exist, is anything failing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer

from messaging.cli._broker import (
    DEFAULT_EXCHANGE,
    EXIT_PROBLEM,
    ExchangeOption,
    QueueInfo,
    UrlOption,
    open_broker,
    run,
)
from messaging.cli._output import JsonOption, Output, Part
from messaging.topology import dlq_name

HELP = """\
Check the broker, the exchange and each --queue (with its DLQ <queue>.dlq).

Something is WRONG, and the exit code is 1, when:
the exchange does not exist; a queue does not exist; a queue has 0 consumers
(nobody is handling it); a queue has no DLQ (failed messages would be lost);
a DLQ holds messages (something failed).

Exit 0: all good. Exit 2: the check could not run (broker unreachable, login
or vhost refused, bad configuration).

With --json: a first line {"kind": "broker", ...} with the exchange and the
verdict, then one {"kind": "queue", ...} line per --queue.
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
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    report = run(collect(queue or [], exchange))
    out = Output(as_json)
    if as_json:
        _print_json(out, report)
    else:
        _print_text(out, report)
    if report.problems:
        raise typer.Exit(EXIT_PROBLEM)


def _print_json(out: Output, report: Report) -> None:
    out.record(
        {
            "kind": "broker",
            "broker": report.broker,
            "exchange": report.exchange,
            "exchange_exists": report.exchange_exists,
            "ok": not report.problems,
            "problems": report.problems,
        }
    )
    for row in report.rows:
        out.record(
            {
                "kind": "queue",
                "queue": row.name,
                "exists": row.queue is not None,
                "messages": row.queue.messages if row.queue else None,
                "consumers": row.queue.consumers if row.queue else None,
                "dlq": dlq_name(row.name),
                "dlq_messages": row.dlq.messages if row.dlq else None,
                "problems": row.problems,
            }
        )


def _print_text(out: Output, report: Report) -> None:
    out.line(("broker", "green"), f"    {report.broker}  reachable")
    if report.exchange_exists:
        out.line(("exchange", "green"), f"  {report.exchange}  exists")
    else:
        out.line(("exchange", "red"), f"  {report.exchange}  MISSING")
    if report.rows:
        rows: list[list[Part]] = [
            [
                row.name,
                _count(row.queue, messages=True),
                _count(row.queue, messages=False),
                _count(row.dlq, messages=True),
                ("; ".join(row.problems), "red") if row.problems else ("ok", "green"),
            ]
            for row in report.rows
        ]
        out.table(["queue", "messages", "consumers", "dlq", "status"], rows)
    problems = report.problems
    if problems:
        out.line(("WRONG", "bold red"), f": {len(problems)} problem(s)")
    else:
        out.line(("OK", "bold green"))


def _count(info: QueueInfo | None, *, messages: bool) -> Part:
    if info is None:
        return ("missing", "red")
    return str(info.messages if messages else info.consumers)
