"""The bus's asyncio API (``messaging.aio``), on the same rows (also on uvloop).

Same bodies and topology as :mod:`impl_bus` (its ``prepare``/``cleanup``,
``MESSAGE``, ``config_from_url``): a protobuf ``QueryRequest`` of about 200
bytes, serialized on every publish and decoded on every delivery, and the
bus's own queue arguments (DLX, DLQ).

- ``bus aio`` publish: ``AsyncEventPublisher.publish`` one at a time (each
  waits for its confirm, like the sync ``bus`` row);
- ``bus aio window`` publish: PUBLISH_IN_FLIGHT coroutines, each awaiting its
  confirm before its next publish (the raw asyncio clients' shape);
- ``bus aio`` consume100/consume1: an ``AsyncEventSubscriber`` whose handler
  counts; timed from ``start()`` to the N-th handler return;
- ``bus aio`` rpc: ``AsyncEventPublisher.request`` against an
  ``AsyncBaseAgent`` responder (its own connection pool, same loop) that
  answers with ``publish_response``. Unlike the raw rows, the bus confirms
  both the request and the reply (publisher confirms on every publish), and
  the request goes through the topic exchange, not the default exchange.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common import (
    PUBLISH_IN_FLIGHT,
    BenchContext,
    Sample,
    Stopwatch,
    latency_sample,
    rate_sample,
)
from google.protobuf.message import Message as ProtoMessage
from impl_aiopika import shares
from impl_bus import AGENT, BODY, MESSAGE, cleanup, config_from_url, prepare
from registry import register_async

from messaging.aio import (
    AsyncBaseAgent,
    AsyncConnectionPool,
    AsyncEventPublisher,
    AsyncEventSubscriber,
)
from messaging.generated.messages_pb2 import QueryRequest


def _pool(ctx: BenchContext) -> AsyncConnectionPool:
    return AsyncConnectionPool(config_from_url(ctx.url))


@register_async("bus aio", "publish", raw=False, prepare=prepare, cleanup=cleanup)
async def publish(ctx: BenchContext) -> Sample:
    """AsyncEventPublisher.publish, awaited one at a time."""
    pool = _pool(ctx)
    try:
        await pool.connect()
        publisher = AsyncEventPublisher(pool, AGENT, ctx.exchange)

        async def run() -> None:
            for _ in range(ctx.messages):
                await publisher.publish(MESSAGE, ctx.routing_key)

        sw = Stopwatch()
        sw.start()
        await asyncio.wait_for(run(), ctx.deadline_s)
        sw.stop()
        return rate_sample(ctx, ctx.messages, sw.seconds, body_bytes=len(BODY))
    finally:
        await pool.close()


@register_async("bus aio window", "publish", raw=False, prepare=prepare, cleanup=cleanup)
async def publish_window(ctx: BenchContext) -> Sample:
    """PUBLISH_IN_FLIGHT coroutines, each publishing and awaiting its confirm in turn."""
    pool = _pool(ctx)
    try:
        await pool.connect()
        publisher = AsyncEventPublisher(pool, AGENT, ctx.exchange)

        async def publishing(count: int) -> None:
            for _ in range(count):
                await publisher.publish(MESSAGE, ctx.routing_key)

        sw = Stopwatch()
        sw.start()
        await asyncio.wait_for(
            asyncio.gather(*(publishing(c) for c in shares(ctx.messages, PUBLISH_IN_FLIGHT))),
            ctx.deadline_s,
        )
        sw.stop()
        return rate_sample(
            ctx, ctx.messages, sw.seconds, body_bytes=len(BODY), in_flight=PUBLISH_IN_FLIGHT
        )
    finally:
        await pool.close()


class _Counter(AsyncEventSubscriber):
    """Counts decoded messages; at the expected count stops the watch and says so."""

    def __init__(self, pool: AsyncConnectionPool, ctx: BenchContext, sw: Stopwatch) -> None:
        self.expected = ctx.messages
        self.handled = 0
        self.sw = sw
        self.done = asyncio.get_running_loop().create_future()
        super().__init__(
            pool,
            AGENT,
            exchange_name=ctx.exchange,
            queue_name=ctx.queue,
            routing_keys=(ctx.routing_key,),
            prefetch_count=ctx.prefetch,
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return QueryRequest

    async def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.handled += 1
        if self.handled == self.expected:
            self.sw.stop()
            # Not self.stop() here: it waits for the handlers in hand, this one too.
            self.done.set_result(None)


@register_async("bus aio", "consume100", "consume1", raw=False, prepare=prepare, cleanup=cleanup)
async def consume(ctx: BenchContext) -> Sample:
    """AsyncEventSubscriber: decode + handler + ack after return, until all N handled."""
    pool = _pool(ctx)
    try:
        await pool.connect()
        sw = Stopwatch()
        subscriber = _Counter(pool, ctx, sw)
        sw.start()
        await subscriber.start()
        try:
            await asyncio.wait_for(asyncio.shield(subscriber.done), ctx.deadline_s)
        except TimeoutError:
            sw.stop()
        await subscriber.stop()
        return rate_sample(ctx, subscriber.handled, sw.seconds, body_bytes=len(BODY))
    finally:
        await pool.close()


class _Responder(AsyncBaseAgent):
    """Answers every request with the request itself, to its reply_to."""

    def __init__(self, pool: AsyncConnectionPool, ctx: BenchContext) -> None:
        self.routing_key = ctx.routing_key
        super().__init__(
            pool,
            f"{AGENT}-responder",
            routing_keys=[ctx.routing_key],
            exchange_name=ctx.exchange,
            queue_name=ctx.queue,
            prefetch_count=100,
        )

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {self.routing_key: QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        await self.publish_response(message, routing_key, properties["correlation_id"])


@register_async("bus aio", "rpc", raw=False, prepare=prepare, cleanup=cleanup)
async def rpc(ctx: BenchContext) -> Sample:
    """AsyncEventPublisher.request, one after another, against an AsyncBaseAgent."""
    server, client = _pool(ctx), _pool(ctx)
    responder = _Responder(server, ctx)
    try:
        await server.connect()
        await client.connect()
        await responder.start()
        publisher = AsyncEventPublisher(client, AGENT, ctx.exchange)
        await publisher.request(MESSAGE, ctx.routing_key, timeout=30.0)  # warm-up, not timed
        latencies: list[float] = []
        started = time.monotonic()
        sw = Stopwatch()
        sw.start()
        for _ in range(ctx.messages):
            remaining = ctx.remaining(started)
            if remaining <= 0:
                break
            t0 = time.perf_counter()
            await publisher.request(MESSAGE, ctx.routing_key, timeout=remaining)
            latencies.append(time.perf_counter() - t0)
        sw.stop()
        return latency_sample(ctx, latencies, sw.seconds)
    finally:
        await responder.stop(timeout=5.0)
        await client.close()
        await server.close()
