"""`chimera-bus dlq ...`: read, replay and purge the dead letters of a queue.

Reading never loses a message: list and show take messages with basic_get
without acking, hold them all on one channel (so none comes round twice), then
put them back with a requeue. Replay acks a dead letter only after the broker
has confirmed its copy at the original destination; a dead letter whose replay
failed is put back in the DLQ, and one in flight when the replay dies is
requeued by the broker when the channel closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress

from messaging.cli._broker import (
    EXIT_PROBLEM,
    Broker,
    QueueInfo,
    UrlOption,
    fail,
    open_broker,
    publish_confirmed,
    run,
)
from messaging.cli._letters import (
    chimera_headers,
    describe_lines,
    headers_of,
    original_target,
    plain,
    record,
    replay_properties,
    why,
)
from messaging.cli._output import JsonOption, Output, safe, text
from messaging.cli._selection import ErrorTypeOption, IdOption, Selection, SinceOption
from messaging.cli._types import ImportOption, load_types
from messaging.errors import ConnectionFailedError, PublishError, TopologyError
from messaging.topology import dlq_name
from messaging.transport import Channel, Delivery

app = typer.Typer(
    help="Dead letters in <queue>.dlq: list, show, replay, purge. QUEUE is the work queue "
    "or its .dlq.",
    no_args_is_help=True,
)

QueueArg = Annotated[str, typer.Argument(help="The work queue, or its DLQ (<queue>.dlq).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def resolve(queue: str) -> tuple[str, str]:
    """(work queue, DLQ) from either name."""
    if queue.endswith(".dlq"):
        return queue.removesuffix(".dlq"), queue
    return queue, dlq_name(queue)


async def require(broker: Broker, dlq: str) -> QueueInfo:
    info = await broker.queue(dlq)
    if info is None:
        raise TopologyError(f"queue {dlq!r} does not exist: no dead letters have a place there")
    return info


async def peek(queue: str, limit: int) -> tuple[QueueInfo, list[Delivery]]:
    """Up to ``limit`` dead letters, read and all put back."""
    _, dlq = resolve(queue)
    async with open_broker() as broker:
        info = await require(broker, dlq)
        reader = broker.reader("dlq-read")
        letters: list[Delivery] = []
        try:
            # Bounded by the depth read first: nothing read is requeued before the end,
            # so this cannot loop, and messages arriving meanwhile are left alone.
            for _ in range(min(info.messages, limit)):
                got = await reader.get(dlq)
                if got is None:
                    break
                letters.append(got)
        finally:
            if letters:
                last = letters[-1]
                reader.nack(last.delivery_tag, last.generation, multiple=True, requeue=True)
        return info, letters


@app.command("list")
def list_(
    queue: QueueArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Read at most N.")] = 1000,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    """One line per dead letter: ids, type, original routing key, and why it died.

    On a terminal a table; piped, one tab-separated line per dead letter (never
    wrapped, so grep sees the whole reason); with --json one object per line.
    """
    info, letters = run(peek(queue, limit))
    out = Output(as_json)
    work = resolve(queue)[0]
    rows: list[list[str]] = []
    for n, letter in enumerate(letters, 1):
        props = letter.properties
        headers = headers_of(letter)
        target = original_target(headers, work)
        routing_key = target[1] if target else str(plain(letter.routing_key))
        if as_json:
            out.record(
                {
                    "position": n,
                    "message_id": plain(props.message_id),
                    "correlation_id": plain(props.correlation_id),
                    "type": plain(props.message_type),
                    "original_exchange": target[0] if target else None,
                    "original_routing_key": target[1] if target else None,
                    "why": why(headers),
                    **chimera_headers(headers),
                }
            )
            continue
        rows.append(
            [
                str(n),
                str(plain(props.message_id)),
                str(plain(props.correlation_id)),
                str(plain(props.message_type)),
                routing_key,
                why(headers),
            ]
        )
    if not as_json:
        out.table(["#", "message_id", "correlation_id", "type", "routing key", "why"], rows)
    out.note(f"{info.name}: {info.messages} dead letter(s), {len(letters)} shown")


@app.command()
def show(
    queue: QueueArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most N.")] = 10,
    as_json: JsonOption = False,
    url: UrlOption = None,
    imports: ImportOption = None,
) -> None:
    """Dead letters in full: properties, decoded body, x-death and x-chimera-* headers.

    With --json, one object per dead letter per line, every header included.
    Bodies of your own types decode with --import shop.orders_pb2.
    """
    load_types(imports)
    info, letters = run(peek(queue, limit))
    out = Output(as_json)
    for n, letter in enumerate(letters, 1):
        if as_json:
            out.record({"position": n, **record(letter)})
        elif out.is_terminal:
            title = text(f"{n}/{info.messages}")
            out.show(Panel(Group(*describe_lines(letter)), title=title, title_align="left"))
        else:
            out.line(f"--- {n}/{info.messages}")
            for line in describe_lines(letter):
                out.show(line)
    out.note(f"{info.name}: {info.messages} dead letter(s), {len(letters)} shown")


@dataclass
class ReplayReport:
    dlq: str
    total: int
    replayed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


async def replay_letters(
    queue: str,
    limit: int | None,
    to_queue: bool,
    progress: Progress,
    selection: Selection | None = None,
    routing_key: str | None = None,
) -> ReplayReport:
    if selection is not None and not selection.everything:
        return await replay_selected(queue, limit, to_queue, progress, selection, routing_key)
    work, dlq = resolve(queue)
    async with open_broker() as broker:
        info = await require(broker, dlq)
        total = info.messages if limit is None else min(info.messages, limit)
        report = ReplayReport(dlq, total)
        reader = broker.reader("dlq-replay")
        publisher = broker.confirmed("dlq-replay")
        timeout = broker.config.publish_timeout
        # Rich reads a task's description as markup: the name goes in inert.
        task = progress.add_task(f"replaying {escape(safe(dlq))}", total=total)
        kept: list[Delivery] = []  # failed replays, held unacked until the end
        try:
            for _ in range(total):
                letter = await reader.get(dlq)
                if letter is None:
                    break
                problem = await replay_one(publisher, letter, work, to_queue, timeout, routing_key)
                if problem is None:
                    reader.ack(letter.delivery_tag, letter.generation)
                    report.replayed += 1
                else:
                    kept.append(letter)
                    report.failed.append((str(letter.properties.message_id), problem))
                progress.advance(task)
        finally:
            for letter in kept:
                reader.nack(letter.delivery_tag, letter.generation, requeue=True)
        return report


async def replay_selected(
    queue: str,
    limit: int | None,
    to_queue: bool,
    progress: Progress,
    selection: Selection,
    routing_key: str | None,
) -> ReplayReport:
    """Replay the dead letters ``selection`` picks; every other one stays where it was.

    Each dead letter present when it starts is looked at once (bounded by the
    depth read first); those not picked, and those whose replay failed, are held
    unacked on the reading channel and put back at the end.
    """
    work, dlq = resolve(queue)
    async with open_broker() as broker:
        info = await require(broker, dlq)
        report = ReplayReport(dlq, 0)
        reader = broker.reader("dlq-replay")
        publisher = broker.confirmed("dlq-replay")
        timeout = broker.config.publish_timeout
        task = progress.add_task(f"replaying from {escape(safe(dlq))}", total=info.messages)
        held: list[Delivery] = []
        try:
            for _ in range(info.messages):
                if limit is not None and report.total >= limit:
                    break
                letter = await reader.get(dlq)
                if letter is None:
                    break
                progress.advance(task)
                if not selection.matches(letter):
                    held.append(letter)
                    continue
                report.total += 1
                problem = await replay_one(publisher, letter, work, to_queue, timeout, routing_key)
                if problem is None:
                    reader.ack(letter.delivery_tag, letter.generation)
                    report.replayed += 1
                else:
                    held.append(letter)
                    report.failed.append((str(letter.properties.message_id), problem))
        finally:
            for letter in held:
                reader.nack(letter.delivery_tag, letter.generation, requeue=True)
        return report


async def replay_one(
    publisher: Channel,
    letter: Delivery,
    work: str,
    to_queue: bool,
    timeout: float,
    new_routing_key: str | None = None,
) -> str | None:
    """Publish one dead letter again; None once confirmed, else why not.

    ``new_routing_key``: to its original exchange, but with this key.
    """
    if to_queue:
        target: tuple[str, str] | None = ("", work)
    else:
        target = original_target(headers_of(letter), work)
    if target is None:
        return "no x-chimera-original-* or x-death header says where it came from"
    exchange, routing_key = target
    if new_routing_key is not None:
        routing_key = new_routing_key
    try:
        await publish_confirmed(
            publisher,
            letter.body,
            exchange=exchange,
            routing_key=routing_key,
            properties=replay_properties(letter.properties, work),
            timeout=timeout,
        )
    except ConnectionFailedError:
        raise
    except PublishError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@app.command()
def replay(
    queue: QueueArg,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Replay at most N (default: all).")
    ] = None,
    to_queue: Annotated[
        bool,
        typer.Option(
            "--to-queue",
            help="Send each straight to the work queue (default exchange) instead of its "
            "original exchange and routing key, so other queues bound to that key do not "
            "receive it again.",
        ),
    ] = False,
    routing_key: Annotated[
        str | None,
        typer.Option(
            "--routing-key",
            help="Send each to its original exchange with this routing key instead (to a "
            "fixed agent, or a key no longer bound to the failing one).",
        ),
    ] = None,
    ids: IdOption = None,
    error_types: ErrorTypeOption = None,
    since: SinceOption = None,
    yes: YesOption = False,
    url: UrlOption = None,
) -> None:
    """Publish dead letters again to their original exchange and routing key.

    Each one keeps its properties (message id, correlation id, type, headers
    minus x-death), is published with confirms and mandatory, and is removed
    from the DLQ only after the broker confirmed it. A returned or nacked one
    stays in the DLQ and is listed; the exit code is then 1. --id,
    --error-type and --since pick which ones (all given must hold); the others
    stay in the DLQ.
    """
    out = Output()
    if to_queue and routing_key is not None:
        fail("--to-queue and --routing-key say two different places: give one")
    selection = select(ids, error_types, since)
    if not yes:
        info, picked = run(count_selected(queue, selection))
        if info.messages == 0:
            out.line(f"{info.name} is empty")
            return
        if picked == 0:
            out.line(f"{info.name}: no dead letter matches ({selection.describe()})")
            return
        count = picked if limit is None else min(limit, picked)
        which = "" if selection.everything else f" matching {selection.describe()}"
        typer.confirm(
            f"Replay {count}{which} of {info.messages} dead letter(s) from {info.name}"
            f"{'' if routing_key is None else f' with routing key {safe(routing_key)}'}?",
            abort=True,
        )
    with Progress(console=out.errors, transient=True) as progress:
        report = run(replay_letters(queue, limit, to_queue, progress, selection, routing_key))
    out.line(f"replayed {report.replayed} of {report.total} from {report.dlq}")
    if report.failed:
        out.table(["message_id", "left in the DLQ because"], report.failed)
        raise typer.Exit(EXIT_PROBLEM)


async def depth(queue: str) -> QueueInfo:
    async with open_broker() as broker:
        return await require(broker, resolve(queue)[1])


def select(ids: list[str] | None, error_types: list[str] | None, since: str | None) -> Selection:
    try:
        return Selection.of(ids, error_types, since)
    except ValueError as exc:
        fail(str(exc))


async def count_selected(queue: str, selection: Selection) -> tuple[QueueInfo, int]:
    """The DLQ and how many of its dead letters ``selection`` picks (all read, all put back)."""
    if selection.everything:
        info = await depth(queue)
        return info, info.messages
    info, letters = await peek(queue, limit=10**9)
    return info, sum(selection.matches(letter) for letter in letters)


async def purge_queue(queue: str, selection: Selection | None = None) -> int:
    _, dlq = resolve(queue)
    async with open_broker() as broker:
        info = await require(broker, dlq)
        if selection is None or selection.everything:
            return await broker.inspector.purge_queue(dlq)
        reader = broker.reader("dlq-purge")
        held: list[Delivery] = []
        purged = 0
        try:
            for _ in range(info.messages):  # each present dead letter looked at once
                letter = await reader.get(dlq)
                if letter is None:
                    break
                if selection.matches(letter):
                    reader.ack(letter.delivery_tag, letter.generation)
                    purged += 1
                else:
                    held.append(letter)
        finally:
            for letter in held:
                reader.nack(letter.delivery_tag, letter.generation, requeue=True)
        return purged


@app.command()
def purge(
    queue: QueueArg,
    ids: IdOption = None,
    error_types: ErrorTypeOption = None,
    since: SinceOption = None,
    yes: YesOption = False,
    url: UrlOption = None,
) -> None:
    """Delete the dead letters in the DLQ: all, or those --id, --error-type and --since
    pick (asks first unless --yes)."""
    _, dlq = resolve(queue)
    selection = select(ids, error_types, since)
    if not yes:
        info, picked = run(count_selected(queue, selection))
        which = "all" if selection.everything else f"{picked} matching {selection.describe()} of"
        typer.confirm(
            f"Delete {which} {info.messages} dead letter(s) in {dlq}? They cannot be recovered",
            abort=True,
        )
    purged = run(purge_queue(queue, selection))
    Output().line(f"purged {purged} dead letter(s) from {dlq}")
