"""The bus's synchronous API (``messaging``), on the same rows as the raw clients.

The body is a protobuf ``QueryRequest`` serialized to about 200 bytes; the bus
serializes it on every publish and decodes it on every delivery, which the raw
clients (fixed bytes) do not. Topology is the bus's own (work queue with
dead-letter arguments, DLX, DLQ), declared from ``messaging.topology`` so that
the bus's own declarations match it.

The rpc row's responder is a ``BaseAgent`` in a thread of its own (its own
connection pool; all sync bus objects share the process's one IO thread)
answering with ``publish_response``; unlike the raw rows, the bus confirms
both the request and the reply, and the request goes through the topic
exchange rather than the default exchange.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
from common import (
    BODY_SIZE,
    PUBLISH_IN_FLIGHT,
    BenchContext,
    Sample,
    Stopwatch,
    close_quietly,
    delete_names,
    latency_sample,
    prefill,
    rate_sample,
)
from google.protobuf.message import Message as ProtoMessage
from pydantic import SecretStr
from registry import ROWS, register

from messaging import BaseAgent, ConnectionPool, EventPublisher, EventSubscriber, RabbitMQConfig
from messaging.generated.messages_pb2 import QueryRequest
from messaging.metadata import create_metadata
from messaging.topology import (
    Topology,
    control_exchange,
    dlq_name,
    dlx_name,
    subscriber_topology,
)

AGENT = "bench"
RESPONDER_START_S = 30.0


def bench_message() -> QueryRequest:
    """A QueryRequest whose encoding is BODY_SIZE bytes (query padded to fit)."""
    msg = QueryRequest(metadata=create_metadata(AGENT), query="")
    msg.query = "x" * max(0, BODY_SIZE - msg.ByteSize() - 2)  # 2: the field's tag + length
    return msg


MESSAGE = bench_message()
BODY = MESSAGE.SerializeToString()
PROPERTIES: dict[str, Any] = {
    "content_type": "application/x-protobuf",
    "type": QueryRequest.DESCRIPTOR.full_name,
}


def config_from_url(url: str) -> RabbitMQConfig:
    parts = urlsplit(url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return RabbitMQConfig(
        host=parts.hostname or "localhost",
        port=parts.port or 5672,
        username=unquote(parts.username or "guest"),
        password=SecretStr(unquote(parts.password or "guest")),
        vhost=vhost,
    )


def _topology(ctx: BenchContext) -> Topology:
    return subscriber_topology(ctx.exchange, ctx.queue, [ctx.routing_key])


def prepare(ctx: BenchContext) -> None:
    """Declare what the bus's subscriber would (same arguments), and pre-fill for consume."""
    conn = pika.BlockingConnection(pika.URLParameters(ctx.url))
    try:
        ch = conn.channel()
        topo = _topology(ctx)
        for x in topo.exchanges:
            ch.exchange_declare(
                x.name, exchange_type=x.type, durable=x.durable, arguments=dict(x.arguments)
            )
        for q in topo.queues:
            ch.queue_declare(
                q.name,
                durable=q.durable,
                exclusive=q.exclusive,
                auto_delete=q.auto_delete,
                arguments=dict(q.arguments),
            )
        for b in topo.bindings:
            ch.queue_bind(b.queue, b.exchange, routing_key=b.routing_key)
    finally:
        close_quietly(conn)
    if ROWS[ctx.work].kind == "consume":
        prefill(ctx, ctx.messages, body=BODY, properties=PROPERTIES)


def cleanup(ctx: BenchContext) -> None:
    delete_names(
        ctx.url,
        [ctx.queue, dlq_name(ctx.queue)],
        [ctx.exchange, dlx_name(ctx.exchange), control_exchange(ctx.exchange)],
    )


@register("bus", "publish", raw=False, prepare=prepare, cleanup=cleanup)
def publish(ctx: BenchContext) -> Sample:
    """EventPublisher.publish: blocks until confirmed, one at a time (like pika)."""
    with (
        ConnectionPool(config_from_url(ctx.url)) as pool,
        EventPublisher(pool, AGENT, ctx.exchange) as publisher,
    ):
        pool.connect()
        sw = Stopwatch()
        sw.start()
        for _ in range(ctx.messages):
            publisher.publish(MESSAGE, ctx.routing_key)
        sw.stop()
        return rate_sample(ctx, ctx.messages, sw.seconds, body_bytes=len(BODY))


@register("bus nowait", "publish", raw=False, prepare=prepare, cleanup=cleanup)
def publish_nowait(ctx: BenchContext) -> Sample:
    """EventPublisher.publish_nowait with PUBLISH_IN_FLIGHT futures outstanding."""
    with (
        ConnectionPool(config_from_url(ctx.url)) as pool,
        EventPublisher(pool, AGENT, ctx.exchange) as publisher,
    ):
        pool.connect()
        in_flight: deque[Future[str]] = deque()
        sw = Stopwatch()
        sw.start()
        for _ in range(ctx.messages):
            if len(in_flight) >= PUBLISH_IN_FLIGHT:
                in_flight.popleft().result(timeout=ctx.deadline_s)
            in_flight.append(publisher.publish_nowait(MESSAGE, ctx.routing_key))
        while in_flight:
            in_flight.popleft().result(timeout=ctx.deadline_s)
        sw.stop()
        return rate_sample(
            ctx, ctx.messages, sw.seconds, body_bytes=len(BODY), in_flight=PUBLISH_IN_FLIGHT
        )


class _Counter(EventSubscriber):
    """Counts decoded messages; stops itself at the expected count."""

    def __init__(self, pool: ConnectionPool, ctx: BenchContext, sw: Stopwatch) -> None:
        self.expected = ctx.messages
        self.handled = 0
        self.sw = sw
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

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.handled += 1
        if self.handled == self.expected:
            self.sw.stop()
            self.stop()


@register("bus", "consume100", "consume1", raw=False, prepare=prepare, cleanup=cleanup)
def consume(ctx: BenchContext) -> Sample:
    """EventSubscriber: decode + handler + ack after return, until all N handled.

    Timed from start_consuming() to the N-th handler return (its ack is then
    handed to the IO thread, as the raw clients' last ack is written).
    """
    with ConnectionPool(config_from_url(ctx.url)) as pool:
        pool.connect()
        sw = Stopwatch()
        subscriber = _Counter(pool, ctx, sw)
        timer = threading.Timer(ctx.deadline_s, subscriber.stop)  # bounded
        timer.daemon = True
        timer.start()
        try:
            sw.start()
            subscriber.start_consuming()
        finally:
            timer.cancel()
        if subscriber.handled < ctx.messages:
            sw.stop()
        return rate_sample(ctx, subscriber.handled, sw.seconds, body_bytes=len(BODY))


class _Responder(BaseAgent):
    """Answers every request with the request itself, to its reply_to."""

    def __init__(self, pool: ConnectionPool, ctx: BenchContext) -> None:
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

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.publish_response(message, routing_key, properties["correlation_id"])


@register("bus", "rpc", raw=False, prepare=prepare, cleanup=cleanup)
def rpc(ctx: BenchContext) -> Sample:
    """EventPublisher.request, one after another, against a BaseAgent in another thread."""
    with (
        ConnectionPool(config_from_url(ctx.url)) as server,
        ConnectionPool(config_from_url(ctx.url)) as client,
        EventPublisher(client, AGENT, ctx.exchange) as publisher,
    ):
        server.connect()
        client.connect()
        responder = _Responder(server, ctx)
        thread = threading.Thread(target=responder.start_consuming, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + RESPONDER_START_S
            while not responder.is_consuming and time.monotonic() < deadline:
                time.sleep(0.01)
            publisher.request(MESSAGE, ctx.routing_key, timeout=30.0)  # warm-up, not timed
            latencies: list[float] = []
            started = time.monotonic()
            sw = Stopwatch()
            sw.start()
            for _ in range(ctx.messages):
                remaining = ctx.remaining(started)
                if remaining <= 0:
                    break
                t0 = time.perf_counter()
                publisher.request(MESSAGE, ctx.routing_key, timeout=remaining)
                latencies.append(time.perf_counter() - t0)
            sw.stop()
            return latency_sample(ctx, latencies, sw.seconds)
        finally:
            responder.stop()
            thread.join(10)
            responder.close()


STREAM_WINDOW = 256
"""Replies the stream row's caller lets the responder run ahead: the publish rows' 256 in flight."""


def _streamer(pool: ConnectionPool, ctx: BenchContext) -> BaseAgent:
    """A typed handler that streams the request's ``query`` (a count) bench messages back."""
    agent = BaseAgent(
        pool,
        f"{AGENT}-streamer",
        exchange_name=ctx.exchange,
        queue_name=ctx.queue,
        prefetch_count=100,
    )

    @agent.handler(ctx.routing_key)
    def replies(request: QueryRequest) -> Iterator[QueryRequest]:
        for _ in range(int(request.query)):
            yield MESSAGE

    return agent


@contextlib.contextmanager
def _serving(
    ctx: BenchContext, make: Callable[[ConnectionPool, BenchContext], BaseAgent]
) -> Iterator[EventPublisher]:
    """A responder ``make`` builds, consuming on its own pool and thread; yields a publisher
    on another pool to ask it with."""
    with (
        ConnectionPool(config_from_url(ctx.url)) as server,
        ConnectionPool(config_from_url(ctx.url)) as client,
        EventPublisher(client, AGENT, ctx.exchange) as publisher,
    ):
        server.connect()
        client.connect()
        agent = make(server, ctx)
        thread = threading.Thread(target=agent.start_consuming, daemon=True)
        thread.start()
        deadline = time.monotonic() + RESPONDER_START_S
        while not agent.is_consuming and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield publisher
        finally:
            agent.stop()
            thread.join(10)
            agent.close()


@register("bus", "stream", raw=False, prepare=prepare, cleanup=cleanup)
def stream(ctx: BenchContext) -> Sample:
    """One EventPublisher.stream of N replies (window 256) from a typed generator handler."""
    with _serving(ctx, _streamer) as publisher:
        for _ in publisher.stream(QueryRequest(query="1"), ctx.routing_key, 30.0):
            pass  # warm-up, not timed
        received = 0
        sw = Stopwatch()
        sw.start()
        for _ in publisher.stream(
            QueryRequest(query=str(ctx.messages)),
            ctx.routing_key,
            ctx.remaining(time.monotonic()),
            window=STREAM_WINDOW,
        ):
            received += 1
        sw.stop()
        return rate_sample(ctx, received, sw.seconds)


@register("bus round trips", "stream", raw=False, prepare=prepare, cleanup=cleanup)
def stream_as_round_trips(ctx: BenchContext) -> Sample:
    """The same N replies as N EventPublisher.request round trips, one after another."""
    with _serving(ctx, _Responder) as publisher:
        publisher.request(MESSAGE, ctx.routing_key, timeout=30.0)  # warm-up, not timed
        received = 0
        started = time.monotonic()
        sw = Stopwatch()
        sw.start()
        for _ in range(ctx.messages):
            remaining = ctx.remaining(started)
            if remaining <= 0:
                break
            publisher.request(MESSAGE, ctx.routing_key, timeout=remaining)
            received += 1
        sw.stop()
        return rate_sample(ctx, received, sw.seconds)
