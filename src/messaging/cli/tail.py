"""`chimera-bus tail PATTERN`: watch live traffic on the exchange, decoded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer

from messaging.cli._broker import DEFAULT_EXCHANGE, ExchangeOption, UrlOption, open_broker, run
from messaging.cli._letters import body_text, properties_of, record
from messaging.cli._output import JsonOption, Output
from messaging.cli._types import ImportOption, load_types
from messaging.errors import TopologyError
from messaging.routing import validate_binding_pattern
from messaging.transport import Delivery

HELP = """\
Print live messages whose routing key matches PATTERN, decoded.

PATTERN is a topic pattern ('*' is one word, '#' zero or more). Bodies are
decoded from protobuf by their `type` property (your own types with --import
shop.orders_pb2, or the chimera_messaging.schemas entry point); one that does not decode is
printed as a hex snippet. With --json, one object per message per line
(time, routing_key, exchange, type, ids, headers, body or body_error and
body_hex); the other lines go to stderr.

A temporary, exclusive, auto-delete queue is bound to the exchange; the broker
removes it when tail exits. Stops after --count messages, after --timeout
seconds, or on Ctrl-C.
"""


@dataclass
class Seen:
    count: int = 0


async def watch(
    pattern: str,
    exchange: str,
    count: int | None,
    timeout: float | None,
    out: Output,
    seen: Seen,
) -> None:
    validate_binding_pattern(pattern)
    async with open_broker() as broker:
        if not await broker.exchange_exists(exchange):
            raise TopologyError(f"exchange {exchange!r} does not exist; nothing to tail")
        channel = broker.reader("tail")
        queue = await channel.bind_temporary_queue(exchange, pattern)
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()

        async def on_delivery(delivery: Delivery) -> None:
            inbox.put_nowait(delivery)

        await channel.consume(queue, on_delivery, exclusive=True, no_ack=True)
        out.note(
            (f"tailing {exchange} for {pattern} (temporary queue {queue}); Ctrl-C to stop", "dim")
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or seen.count < count:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            try:
                delivery = await asyncio.wait_for(inbox.get(), wait)
            except TimeoutError:
                break
            seen.count += 1
            show(out, delivery)


def show(out: Output, delivery: Delivery) -> None:
    now = datetime.now(UTC)
    if out.as_json:
        out.record({"time": now.isoformat(), **record(delivery)})
        return
    meta = properties_of(delivery)
    out.line(
        (now.astimezone().strftime("%H:%M:%S"), "bold"),
        " ",
        (str(meta["routing_key"]), "cyan"),
        f" {meta['type'] or '?'}  message_id={meta['message_id']}  "
        f"correlation_id={meta['correlation_id']}",
    )
    out.show(body_text(delivery.properties.message_type, delivery.body))


def tail(
    pattern: Annotated[str, typer.Argument(help="Topic pattern, e.g. 'query.*' or '#'.")],
    exchange: ExchangeOption = DEFAULT_EXCHANGE,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after N messages.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", "-t", min=0, help="Stop after S seconds.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    imports: ImportOption = None,
) -> None:
    load_types(imports)
    out = Output(as_json)
    seen = Seen()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail usually ends
        run(watch(pattern, exchange, count, timeout, out, seen))
    out.note((f"{seen.count} message(s)", "dim"))
