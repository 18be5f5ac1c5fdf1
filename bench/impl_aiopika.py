"""aio-pika 10: the asyncio client with a per-message object layer (also on uvloop)."""

from __future__ import annotations

import asyncio
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from common import (
    DIRECT_REPLY_TO,
    PUBLISH_IN_FLIGHT,
    BenchContext,
    Sample,
    Stopwatch,
    latency_sample,
    rate_sample,
)
from registry import register_async


def shares(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal counts (dropping zeros)."""
    base, extra = divmod(total, parts)
    return [c for c in (base + (1 if i < extra else 0) for i in range(parts)) if c]


@register_async("aio-pika", "publish")
async def publish(ctx: BenchContext) -> Sample:
    conn = await aio_pika.connect(ctx.url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(ctx.exchange, ensure=False)

        async def publisher(count: int) -> None:
            # Each of PUBLISH_IN_FLIGHT coroutines waits for its confirm before
            # the next publish: exactly that many unconfirmed at any time.
            for _ in range(count):
                message = aio_pika.Message(ctx.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(message, ctx.routing_key, mandatory=True)

        sw = Stopwatch()
        sw.start()
        await asyncio.wait_for(
            asyncio.gather(*(publisher(c) for c in shares(ctx.messages, PUBLISH_IN_FLIGHT))),
            ctx.deadline_s,
        )
        sw.stop()
        return rate_sample(ctx, ctx.messages, sw.seconds, in_flight=PUBLISH_IN_FLIGHT)
    finally:
        await conn.close()


@register_async("aio-pika", "consume100", "consume1")
async def consume(ctx: BenchContext) -> Sample:
    conn = await aio_pika.connect(ctx.url)
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=ctx.prefetch)
        queue = await channel.get_queue(ctx.queue, ensure=False)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sw = Stopwatch()
        acked = 0

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal acked
            await message.ack()
            acked += 1
            if acked == ctx.messages and not done.done():
                sw.stop()
                done.set_result(None)

        sw.start()
        tag = await queue.consume(on_message)
        try:
            await asyncio.wait_for(done, ctx.deadline_s)
        except TimeoutError:
            sw.stop()
        await queue.cancel(tag)
        return rate_sample(ctx, acked, sw.seconds)
    finally:
        await conn.close()


async def _respond(ctx: BenchContext, conn: aio_pika.abc.AbstractConnection) -> None:
    channel = await conn.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=100)
    queue = await channel.get_queue(ctx.queue, ensure=False)

    async def on_request(message: AbstractIncomingMessage) -> None:
        assert message.reply_to is not None
        reply = aio_pika.Message(message.body, correlation_id=message.correlation_id)
        # mandatory=False: RabbitMQ 3.10 answers a mandatory publish to a direct
        # reply-to name with basic.return NO_ROUTE even though it delivered it.
        await channel.default_exchange.publish(reply, message.reply_to, mandatory=False)
        await message.ack()

    await queue.consume(on_request)


@register_async("aio-pika", "rpc")
async def rpc(ctx: BenchContext) -> Sample:
    server = await aio_pika.connect(ctx.url)
    client = await aio_pika.connect(ctx.url)
    try:
        await _respond(ctx, server)
        # Requests are not publisher-confirmed: the reply is the confirmation.
        channel = await client.channel(publisher_confirms=False)
        loop = asyncio.get_running_loop()
        pending: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: AbstractIncomingMessage) -> None:
            fut = pending.pop(message.correlation_id or "", None)
            if fut is not None and not fut.done():
                fut.set_result(message.body)

        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(on_reply, no_ack=True)

        latencies: list[float] = []
        started = time.monotonic()
        sw = Stopwatch()
        sw.start()
        for i in range(ctx.messages):
            cid = str(i)
            fut: asyncio.Future[bytes] = loop.create_future()
            pending[cid] = fut
            request = aio_pika.Message(
                ctx.body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=cid,
                reply_to=DIRECT_REPLY_TO,
            )
            t0 = time.perf_counter()
            await channel.default_exchange.publish(request, ctx.queue)
            await asyncio.wait_for(fut, max(0.001, ctx.remaining(started)))
            latencies.append(time.perf_counter() - t0)
        sw.stop()
        return latency_sample(ctx, latencies, sw.seconds)
    finally:
        await client.close()
        await server.close()
