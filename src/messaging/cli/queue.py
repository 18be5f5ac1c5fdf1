"""`chimera-bus queue delete NAME`: remove a work queue the bus no longer uses, with its family.

An agent renamed (or given another ``queue_name``) declares a new queue and
leaves the old one behind, still bound to the exchange: it keeps collecting
copies of every matching event, for ever. Deleting it by hand means finding
its DLQ and retry queues too; this command finds them by the bus's naming
(``<queue>.dlq``, ``<queue>.retry.<n>``), shows what each holds, asks, and
deletes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from messaging.cli._broker import EXIT_ERROR, Broker, UrlOption, fail, open_broker, run
from messaging.cli._output import Output
from messaging.topology import dlq_name, retry_queue_name
from messaging.transport import QueueInfo

app = typer.Typer(help="Work queues: delete one the bus no longer uses.", no_args_is_help=True)

_MOST_RETRY_QUEUES = 100
"""A retry ladder longer than this is not one the bus declared."""


@dataclass(frozen=True)
class Family:
    """A work queue and the queues the bus declares for it, as found on the broker."""

    name: str
    work: QueueInfo | None
    related: list[QueueInfo]

    @property
    def existing(self) -> list[QueueInfo]:
        return ([self.work] if self.work else []) + self.related

    @property
    def messages(self) -> int:
        return sum(q.messages for q in self.existing)

    @property
    def consumers(self) -> int:
        return sum(q.consumers for q in self.existing)


async def find(broker: Broker, name: str) -> Family:
    related = []
    dlq = await broker.queue(dlq_name(name))
    if dlq is not None:
        related.append(dlq)
    # Retry queues are numbered from 1 without gaps (one per configured delay).
    for attempt in range(1, _MOST_RETRY_QUEUES + 1):
        retry = await broker.queue(retry_queue_name(name, attempt))
        if retry is None:
            break
        related.append(retry)
    return Family(name, await broker.queue(name), related)


async def look(name: str) -> Family:
    async with open_broker() as broker:
        return await find(broker, name)


async def delete_family(name: str, force: bool) -> list[tuple[str, int]]:
    """Delete what exists of the family, work queue first; (queue, messages dropped) each."""
    async with open_broker() as broker:
        family = await find(broker, name)
        if not force:
            refuse_if_in_use(family)
        deleted = []
        # The work queue first: once it is gone nothing new dead-letters into the others.
        for queue in family.existing:
            deleted.append((queue.name, await broker.inspector.delete_queue(queue.name)))
        return deleted


def refuse_if_in_use(family: Family) -> None:
    busy = [q for q in family.existing if q.consumers]
    if busy:
        names = ", ".join(f"{q.name} ({q.consumers})" for q in busy)
        fail(
            f"{names} still has consumers: an agent is using it, and the bus re-declares a "
            f"queue deleted under its consumer. Stop that agent first, or pass --force",
            EXIT_ERROR,
        )


def delete(
    name: Annotated[str, typer.Argument(help="The work queue (not its .dlq).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete even while consumers are attached.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """Delete a work queue with its DLQ (<name>.dlq) and retry queues (<name>.retry.<n>).

    For the old queue of a renamed agent. Shows each queue with its messages
    and asks first (unless --yes): their messages are gone for good, dead
    letters included. Refuses while any of them has consumers (unless
    --force). Exit 2 when none of them exists.
    """
    out = Output()
    if name.endswith(".dlq") or ".retry." in name:
        fail(f"{name!r} is a DLQ or retry queue: give the work queue's name, and its family goes")
    family = run(look(name))
    if not family.existing:
        fail(f"queue {name!r} does not exist, nor its DLQ or retry queues")
    if not force:
        refuse_if_in_use(family)
    rows = [[q.name, str(q.messages), str(q.consumers)] for q in family.existing]
    if family.work is None:
        out.line(f"note: {name} itself does not exist; its other queues do")
    out.table(["queue", "messages", "consumers"], rows)
    if not yes:
        typer.confirm(
            f"Delete these {len(rows)} queue(s) and the {family.messages} message(s) in them? "
            f"They cannot be recovered",
            abort=True,
        )
    for queue, dropped in run(delete_family(name, force)):
        out.line(f"deleted {queue} ({dropped} message(s))")


app.command("delete")(delete)
