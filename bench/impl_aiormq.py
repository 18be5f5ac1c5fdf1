"""aiormq 7: aio-pika's protocol layer used raw (also on uvloop).

Two consume variants: one ack per message, and one basic_ack(multiple=True)
every MULTIPLE_ACK_EVERY messages (prefetch 100 only).
"""

from __future__ import annotations

import asyncio
import time

import aiormq
from aiormq.abc import DeliveredMessage
from common import (
    DIRECT_REPLY_TO,
    MULTIPLE_ACK_EVERY,
    PERSISTENT,
    PUBLISH_IN_FLIGHT,
    BenchContext,
    Sample,
    Stopwatch,
    latency_sample,
    rate_sample,
)
from impl_aiopika import shares
from registry import register_async

_PERSISTENT = aiormq.spec.Basic.Properties(delivery_mode=PERSISTENT)


@register_async("aiormq", "publish")
async def publish(ctx: BenchContext) -> Sample:
    return await _publish(ctx, PUBLISH_IN_FLIGHT)


@register_async("aiormq one at a time", "publish")
async def publish_one_at_a_time(ctx: BenchContext) -> Sample:
    """Each publish waits for its confirm: the raw asyncio yardstick of ``bus aio``."""
    return await _publish(ctx, 1)


async def _publish(ctx: BenchContext, in_flight: int) -> Sample:
    conn = await aiormq.connect(ctx.url)
    try:
        channel = await conn.channel(publisher_confirms=True)

        async def publisher(count: int) -> None:
            for _ in range(count):
                confirm = await channel.basic_publish(
                    ctx.body,
                    exchange=ctx.exchange,
                    routing_key=ctx.routing_key,
                    properties=_PERSISTENT,
                    mandatory=True,
                )
                if not isinstance(confirm, aiormq.spec.Basic.Ack):
                    raise RuntimeError(f"publish not confirmed: {confirm!r}")

        sw = Stopwatch()
        sw.start()
        await asyncio.wait_for(
            asyncio.gather(*(publisher(c) for c in shares(ctx.messages, in_flight))),
            ctx.deadline_s,
        )
        sw.stop()
        return rate_sample(ctx, ctx.messages, sw.seconds, in_flight=in_flight)
    finally:
        await conn.close()


async def _consume(ctx: BenchContext, ack_every: int) -> Sample:
    conn = await aiormq.connect(ctx.url)
    try:
        channel = await conn.channel()
        await channel.basic_qos(prefetch_count=ctx.prefetch)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sw = Stopwatch()
        received = 0
        acked = 0
        highest_acked = 0

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal received, acked, highest_acked
            received += 1
            tag = message.delivery_tag
            assert tag is not None
            if ack_every == 1:
                await channel.basic_ack(tag)
                acked += 1
            elif received % ack_every == 0 or received == ctx.messages:
                # Ack everything up to the highest tag seen so far, once.
                if tag > highest_acked:
                    highest_acked = tag
                    await channel.basic_ack(tag, multiple=True)
                acked = received
            if acked == ctx.messages and not done.done():
                sw.stop()
                done.set_result(None)

        sw.start()
        ok = await channel.basic_consume(ctx.queue, on_message, no_ack=False)
        try:
            await asyncio.wait_for(done, ctx.deadline_s)
        except TimeoutError:
            sw.stop()
        assert ok.consumer_tag is not None
        await channel.basic_cancel(ok.consumer_tag)
        notes = {"ack_every": ack_every} if ack_every > 1 else {}
        return rate_sample(ctx, acked, sw.seconds, **notes)
    finally:
        await conn.close()


@register_async("aiormq", "consume100", "consume1")
async def consume(ctx: BenchContext) -> Sample:
    return await _consume(ctx, ack_every=1)


@register_async("aiormq multiple-ack", "consume100")
async def consume_multiple_ack(ctx: BenchContext) -> Sample:
    return await _consume(ctx, ack_every=min(MULTIPLE_ACK_EVERY, ctx.prefetch))


async def consume_replies(channel: aiormq.abc.AbstractChannel) -> dict[str, asyncio.Future[bytes]]:
    """Consume direct reply-to on ``channel``: the returned dict maps a request's
    correlation id to the future its reply's body resolves."""
    pending: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(message: DeliveredMessage) -> None:
        future = pending.pop(message.header.properties.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    await channel.basic_consume(DIRECT_REPLY_TO, on_reply, no_ack=True)
    return pending


async def _respond(ctx: BenchContext, conn: aiormq.abc.AbstractConnection) -> None:
    channel = await conn.channel(publisher_confirms=False)
    await channel.basic_qos(prefetch_count=100)

    async def on_request(message: DeliveredMessage) -> None:
        props = message.header.properties
        assert props.reply_to is not None
        assert message.delivery_tag is not None
        await channel.basic_publish(
            message.body,
            routing_key=props.reply_to,
            properties=aiormq.spec.Basic.Properties(correlation_id=props.correlation_id),
        )
        await channel.basic_ack(message.delivery_tag)

    await channel.basic_consume(ctx.queue, on_request, no_ack=False)


@register_async("aiormq", "rpc")
async def rpc(ctx: BenchContext) -> Sample:
    server = await aiormq.connect(ctx.url)
    client = await aiormq.connect(ctx.url)
    try:
        await _respond(ctx, server)
        channel = await client.channel(publisher_confirms=False)
        loop = asyncio.get_running_loop()
        pending = await consume_replies(channel)

        latencies: list[float] = []
        started = time.monotonic()
        sw = Stopwatch()
        sw.start()
        for i in range(ctx.messages):
            cid = str(i)
            fut: asyncio.Future[bytes] = loop.create_future()
            pending[cid] = fut
            props = aiormq.spec.Basic.Properties(
                delivery_mode=PERSISTENT, correlation_id=cid, reply_to=DIRECT_REPLY_TO
            )
            t0 = time.perf_counter()
            await channel.basic_publish(ctx.body, routing_key=ctx.queue, properties=props)
            await asyncio.wait_for(fut, max(0.001, ctx.remaining(started)))
            latencies.append(time.perf_counter() - t0)
        sw.stop()
        return latency_sample(ctx, latencies, sw.seconds)
    finally:
        await client.close()
        await server.close()
