"""What the bus's request/response asks of the broker, measured with raw aiormq.

The rpc row compares the bus with raw clients that do less broker work: they
publish to the default exchange, without publisher confirms, on one connection
per side. This runs raw aiormq (uvloop) doing the bus's work instead, one piece
at a time: the request through the bench's topic exchange, ``mandatory``, with
``expiration`` and the bus's properties, answered by a responder in the same
process, and then

- ``delivery_mode`` 2 (persistent) or 1 (transient) for the request,
- publisher confirms on the requester's channel or not (the request is not
  waited on for its confirm, as the bus's ``request()`` does not),
- the responder replying on its consuming connection (2 connections in all) or
  on a publishing connection of its own (4, the bus's shape).

Each shape runs ``--rounds`` times, interleaved; it prints the median p50 and
CPU per round trip of each. Not a target: the yardstick stays raw aiormq's own
row in ``run.py``. It says which of the bus's choices cost what.

    BENCH_AMQP_URL=amqp://guest:guest@127.0.0.1:5690/%2F .venv/bin/python bench/rpc_shapes.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from typing import Any

import aiormq
import uvloop
from aiormq.abc import DeliveredMessage
from common import DIRECT_REPLY_TO, BenchContext, make_context
from impl_aiormq import consume_replies
from impl_bus import BODY, cleanup, prepare
from registry import load_all


async def _round_trips(
    ctx: BenchContext, persistent: bool, confirms: bool, connections: int
) -> float:
    """Median round trip in seconds, over ``ctx.messages`` sequential requests."""
    server = await aiormq.connect(ctx.url)
    replier = await aiormq.connect(ctx.url) if connections == 4 else server
    client = await aiormq.connect(ctx.url)
    try:
        consuming = await server.channel(publisher_confirms=False)
        await consuming.basic_qos(prefetch_count=100)
        replying = (
            await replier.channel(publisher_confirms=False) if connections == 4 else consuming
        )

        async def on_request(message: DeliveredMessage) -> None:
            props = message.header.properties
            assert props.reply_to is not None
            assert message.delivery_tag is not None
            await replying.basic_publish(
                message.body,
                routing_key=props.reply_to,
                properties=aiormq.spec.Basic.Properties(
                    correlation_id=props.correlation_id,
                    content_type="application/x-protobuf",
                    message_id="reply",
                ),
            )
            await consuming.basic_ack(message.delivery_tag)

        await consuming.basic_consume(ctx.queue, on_request, no_ack=False)
        channel = await client.channel(publisher_confirms=confirms)
        pending = await consume_replies(channel)
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        for i in range(ctx.messages):
            correlation_id = str(i)
            reply: asyncio.Future[bytes] = loop.create_future()
            pending[correlation_id] = reply
            props = aiormq.spec.Basic.Properties(
                delivery_mode=2 if persistent else 1,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
                expiration="30000",
                content_type="application/x-protobuf",
                message_id=f"request-{i}",
                message_type="chimera.QueryRequest",
                app_id="bench",
            )
            started = time.perf_counter()
            sending = asyncio.ensure_future(
                channel.basic_publish(
                    BODY,
                    exchange=ctx.exchange,
                    routing_key=ctx.routing_key,
                    properties=props,
                    mandatory=True,
                )
            )
            await asyncio.wait_for(reply, 30)
            latencies.append(time.perf_counter() - started)
            await sending  # its confirm (or the write), off the clock
        return statistics.median(latencies)
    finally:
        for connection in {client, replier, server}:
            await connection.close()


def _one(persistent: bool, confirms: bool, connections: int, messages: int) -> tuple[float, float]:
    """(p50 ms, CPU µs per round trip) of one shape, in fresh topology."""
    ctx = make_context("rpc", "bus", messages, 100, 60.0)
    prepare(ctx)
    try:
        cpu = time.process_time()
        p50 = uvloop.run(_round_trips(ctx, persistent, confirms, connections))
        cpu = time.process_time() - cpu
    finally:
        cleanup(ctx)
    return p50 * 1e3, cpu / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000, help="round trips per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per shape (interleaved)")
    args = parser.parse_args()
    load_all()
    shapes = list(itertools.product((True, False), (True, False), (4, 2)))
    results: dict[tuple[bool, bool, int], list[tuple[float, float]]] = {s: [] for s in shapes}
    for _ in range(args.rounds):
        for shape in shapes:
            results[shape].append(_one(*shape, args.messages))
    print("| request | confirms | connections | p50 ms (median) | CPU µs/round trip |")
    print("| --- | --- | --- | --- | --- |")
    for (persistent, confirms, connections), runs in results.items():
        p50 = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        mode = "persistent" if persistent else "transient"
        row: list[Any] = [
            mode,
            "on" if confirms else "off",
            connections,
            f"{p50:.2f}",
            f"{cpu:.0f}",
        ]
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
