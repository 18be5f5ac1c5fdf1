"""`chimera-bus status`: is the broker up, do the exchange and queues exist, is anything failing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import typer

from messaging.cli._admin import Target
from messaging.cli._broker import (
    DEFAULT_EXCHANGE,
    EXIT_PROBLEM,
    ExchangeOption,
    QueueInfo,
    UrlOption,
    open_broker,
    run,
)
from messaging.cli._consumers import Consumers, find_consumers
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

Each consumer of a queue is listed with its connection name, address and
node where the broker can tell: through the management API (at
--management-url, default http://<host>:15672, same user and password), or
rabbitmqctl when the broker runs on this machine (at RABBITMQ_NODENAME when
set). Where neither answers, status says so.

With --json: a first line {"kind": "broker", ...} with the exchange and the
verdict, then one {"kind": "queue", ...} line per --queue.
"""

ManagementOption = Annotated[
    str | None,
    typer.Option(
        "--management-url",
        envvar="CHIMERA_MANAGEMENT_URL",
        help="The broker's management API (default http://<host>:15672).",
        show_default=False,
    ),
]


@dataclass
class QueueRow:
    name: str
    queue: QueueInfo | None
    dlq: QueueInfo | None
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    broker: str
    node: str
    """``host:port`` of the node this check's connection is on (one of RABBITMQ__URL's)."""
    exchange: str
    exchange_exists: bool
    rows: list[QueueRow]
    consumers: Consumers

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


async def collect(queues: list[str], exchange: str, management_url: str | None) -> Report:
    async with open_broker() as broker:
        exists = await broker.exchange_exists(exchange)
        rows = [judge(q, await broker.queue(q), await broker.queue(dlq_name(q))) for q in queues]
        consumed = [row.name for row in rows if row.queue is not None and row.queue.consumers]
        if consumed:
            target = Target.of(broker.node, management_url)
            # Subprocesses and HTTP: off the event loop, which keeps the connections alive.
            consumers = await asyncio.to_thread(find_consumers, target, consumed)
        else:
            consumers = Consumers("nothing to look up")
        return Report(
            broker.config.safe_url(), broker.node.address, exchange, exists, rows, consumers
        )


def status(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A work queue to check; repeat for more."),
    ] = None,
    exchange: ExchangeOption = DEFAULT_EXCHANGE,
    as_json: JsonOption = False,
    url: UrlOption = None,
    management_url: ManagementOption = None,
) -> None:
    report = run(collect(queue or [], exchange, management_url))
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
            "node": report.node,
            "exchange": report.exchange,
            "exchange_exists": report.exchange_exists,
            "ok": not report.problems,
            "problems": report.problems,
            "consumers_from": report.consumers.source,
            "consumers_unknown_because": report.consumers.problems,
        }
    )
    for row in report.rows:
        known = report.consumers.of(row.name) if row.queue and row.queue.consumers else []
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
                "consumer_details": None
                if known is None
                else [
                    {
                        "connection_name": c.connection_name,
                        "peer": c.peer,
                        "node": c.node,
                        "consumer_tag": c.tag,
                    }
                    for c in known
                ],
            }
        )


def _print_text(out: Output, report: Report) -> None:
    out.line(("broker", "green"), f"    {report.broker}  reachable, on node {report.node}")
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
        _print_consumers(out, report)
    problems = report.problems
    if problems:
        out.line(("WRONG", "bold red"), f": {len(problems)} problem(s)")
    else:
        out.line(("OK", "bold green"))


def _print_consumers(out: Output, report: Report) -> None:
    consumed = [row for row in report.rows if row.queue is not None and row.queue.consumers]
    if not consumed:
        return
    found = report.consumers
    if found.source is None:
        out.line(
            ("consumers", "yellow"),
            "  connection names unknown: the broker says how many, not who. "
            + "; ".join(found.problems),
        )
        return
    out.line(("consumers", "green"), f"  from {found.source}")
    for row in consumed:
        for c in found.of(row.name) or []:
            where = ", ".join(p for p in (c.peer, f"node {c.node}" if c.node else None) if p)
            out.line(f"  {row.name}: {c.connection_name or '(no connection name)'}  ({where})")


def _count(info: QueueInfo | None, *, messages: bool) -> Part:
    if info is None:
        return ("missing", "red")
    return str(info.messages if messages else info.consumers)
