"""Spans follow the OpenTelemetry messaging conventions, on both transports.

docs/MONITORING.md ("Traces") is the contract: names, kinds, attributes, a
producer span open until the broker answered, and one trace across agents
that ask each other over request/reply.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from messaging import (
    BaseAgent,
    ConnectionPool,
    EventPublisher,
    PublishNackedError,
    UnroutableMessageError,
)
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool, AsyncEventPublisher
from messaging.generated import messages_pb2 as pb
from messaging.ops import tracing
from tests.conformance.conftest import Target
from tests.conformance.test_guarantees import Recorder, ask


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process; later tests reuse it
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing()
    yield exporter
    tracing.disable_tracing()
    exporter.shutdown()


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


def finished(exporter: InMemorySpanExporter, kind: SpanKind, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is kind and s.name == name]


def one(exporter: InMemorySpanExporter, kind: SpanKind, name: str) -> ReadableSpan:
    found = finished(exporter, kind, name)
    assert len(found) == 1, f"{kind} {name!r}: {[(s.kind, s.name) for s in found]}"
    return found[0]


def duration(span: ReadableSpan) -> int:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.end_time - span.start_time


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


# -- publish and process ---------------------------------------------------------------


def test_publish_and_process_spans_carry_the_conventions(
    target: Target, pool: ConnectionPool, spans: InMemorySpanExporter
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue, ["work.#"])
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    with trace.get_tracer("tests").start_as_current_span("workflow") as workflow:
        message_id = publisher.publish(ask("traced"), "work.one", correlation_id="corr-1")
    target.wait_for(lambda: bool(finished(spans, SpanKind.CONSUMER, f"process {queue}")))
    publisher.close()

    producer = one(spans, SpanKind.PRODUCER, f"publish {exchange}")
    assert parent_of(producer) == workflow.get_span_context().span_id
    assert producer.attributes == {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": "work.one",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": "corr-1",
    }
    assert producer.status.status_code is StatusCode.UNSET
    assert duration(producer) > 0

    consumer = one(spans, SpanKind.CONSUMER, f"process {queue}")
    assert parent_of(consumer) == span_id(producer)
    assert trace_id(consumer) == workflow.get_span_context().trace_id
    assert consumer.attributes == {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": "work.one",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": "corr-1",
        "messaging.consumer.group.name": "recorder",
        "messaging.destination.subscription.name": queue,
    }


def test_an_unroutable_publish_ends_its_span_in_error(
    target: Target, pool: ConnectionPool, spans: InMemorySpanExporter
) -> None:
    exchange = target.exchange()
    publisher = EventPublisher(pool, "sender", exchange)
    with pytest.raises(UnroutableMessageError):
        publisher.publish(ask("lost?"), "nobody.listens")
    publisher.close()

    # The return comes with the broker's confirm: the span was open until then.
    producer = one(spans, SpanKind.PRODUCER, f"publish {exchange}")
    assert producer.status.status_code is StatusCode.ERROR
    assert producer.attributes is not None
    assert producer.attributes["error.type"] == "UnroutableMessageError"
    assert [e.name for e in producer.events] == ["exception"]
    assert duration(producer) > 0


def test_a_nacked_publish_ends_its_span_in_error(
    target: Target, pool: ConnectionPool, spans: InMemorySpanExporter
) -> None:
    exchange, full = target.exchange(), target.queue("full")
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    assert target.declare_raw(full, arguments, bind=(exchange, "work.#")) is None
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("first"), "work.1")
    with pytest.raises(PublishNackedError):
        publisher.publish(ask("second"), "work.2")
    publisher.close()

    first, second = finished(spans, SpanKind.PRODUCER, f"publish {exchange}")
    assert first.status.status_code is StatusCode.UNSET
    assert second.status.status_code is StatusCode.ERROR
    assert second.attributes is not None
    assert second.attributes["error.type"] == "PublishNackedError"


# -- request/reply across three agents ------------------------------------------------


class Asker(BaseAgent):
    """Handles ``<name>.request`` by asking ``ask`` (if any) and answering with what it heard."""

    def __init__(
        self, pool: ConnectionPool, name: str, exchange: str, queue: str, ask: str | None
    ) -> None:
        super().__init__(pool, name, [f"{name}.request"], exchange, queue)
        self.ask = ask
        self.answers: list[str] = []
        self.lock = threading.Lock()

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {f"{self.agent_name}.request": pb.QueryRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        answer = f"{self.agent_name}:{message.query}"
        if self.ask is not None:
            reply = self.request(pb.QueryRequest(query=message.query), f"{self.ask}.request", 10)
            assert isinstance(reply, pb.QueryResponse)
            answer = f"{self.agent_name}<{reply.answer}"
        with self.lock:
            self.answers.append(answer)
        if properties["reply_to"]:
            response = pb.QueryResponse(answer=answer)
            self.publish_response(response, "unused.response", properties["correlation_id"])


def test_one_trace_across_three_agents_asking_each_other(
    target: Target, pool: ConnectionPool, spans: InMemorySpanExporter
) -> None:
    exchange = target.exchange()
    c = Asker(pool, "c", exchange, target.queue("c"), None)
    b = Asker(pool, "b", exchange, target.queue("b"), "c")
    a = Asker(pool, "a", exchange, target.queue("a"), "b")
    for agent in (c, b, a):
        target.start(agent)
    starter = EventPublisher(pool, "starter", exchange)
    with trace.get_tracer("tests").start_as_current_span("workflow") as workflow:
        starter.publish(ask("go"), "a.request")
    target.wait_for(lambda: a.answers == ["a<b<c:go"], what="a's answer")
    target.wait_for(lambda: bool(finished(spans, SpanKind.CONSUMER, f"process {a.queue_name}")))
    starter.close()
    for agent in (a, b, c):
        target.stop(agent)
        agent.close()

    assert_one_trace(spans, exchange, (a.queue_name, b.queue_name, c.queue_name), workflow)


class AsyncAsker(AsyncBaseAgent):
    """:class:`Asker` on the asyncio API."""

    def __init__(
        self, pool: AsyncConnectionPool, name: str, exchange: str, queue: str, ask: str | None
    ) -> None:
        super().__init__(pool, name, [f"{name}.request"], exchange, queue)
        self.ask = ask
        self.answers: list[str] = []

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {f"{self.agent_name}.request": pb.QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        answer = f"{self.agent_name}:{message.query}"
        if self.ask is not None:
            question = pb.QueryRequest(query=message.query)
            reply = await self.request(question, f"{self.ask}.request", 10)
            assert isinstance(reply, pb.QueryResponse)
            answer = f"{self.agent_name}<{reply.answer}"
        self.answers.append(answer)
        if properties["reply_to"]:
            response = pb.QueryResponse(answer=answer)
            await self.publish_response(response, "unused.response", properties["correlation_id"])


async def test_one_trace_across_three_async_agents(
    target: Target, spans: InMemorySpanExporter
) -> None:
    pool = AsyncConnectionPool(target.config)
    exchange = target.exchange()
    c = AsyncAsker(pool, "c", exchange, target.queue("c"), None)
    b = AsyncAsker(pool, "b", exchange, target.queue("b"), "c")
    a = AsyncAsker(pool, "a", exchange, target.queue("a"), "b")
    starter = AsyncEventPublisher(pool, "starter", exchange)
    try:
        for agent in (c, b, a):
            await agent.start()
        with trace.get_tracer("tests").start_as_current_span("workflow") as workflow:
            await starter.publish(ask("go"), "a.request")
        for _ in range(1500):
            if finished(spans, SpanKind.CONSUMER, f"process {a.queue_name}"):
                break
            await asyncio.sleep(0.01)
    finally:
        for agent in (a, b, c):
            await agent.stop()
            await agent.agent.close()
        await starter.close()
        await pool.close()
    assert a.answers == ["a<b<c:go"]
    assert_one_trace(spans, exchange, (a.queue_name, b.queue_name, c.queue_name), workflow)


def assert_one_trace(
    spans: InMemorySpanExporter,
    exchange: str,
    queues: tuple[str, str, str],
    workflow: trace.Span,
) -> None:
    """a is told "go" (a consumer span); it asks b, which asks c (server spans)."""
    a_queue, b_queue, c_queue = queues
    a_process = one(spans, SpanKind.CONSUMER, f"process {a_queue}")
    b_process = one(spans, SpanKind.SERVER, f"process {b_queue}")
    c_process = one(spans, SpanKind.SERVER, f"process {c_queue}")
    clients = by_routing_key(finished(spans, SpanKind.CLIENT, f"request {exchange}"))
    a_asks, b_asks = clients["b.request"], clients["c.request"]
    assert parent_of(a_asks) == span_id(a_process)
    assert parent_of(b_asks) == span_id(b_process)
    assert a_asks.attributes is not None
    assert a_asks.attributes["messaging.operation.name"] == "request"
    requests = by_routing_key(finished(spans, SpanKind.PRODUCER, f"publish {exchange}"))
    assert parent_of(requests["b.request"]) == span_id(a_asks)
    assert parent_of(b_process) == span_id(requests["b.request"])
    assert parent_of(requests["c.request"]) == span_id(b_asks)
    assert parent_of(c_process) == span_id(requests["c.request"])
    # Each reply goes out on the default exchange, in the span of the handler answering.
    replies = finished(spans, SpanKind.PRODUCER, "publish amq.default")
    b_reply, c_reply = sorted(replies, key=lambda r: parent_of(r) != span_id(b_process))
    assert parent_of(b_reply) == span_id(b_process)
    assert parent_of(c_reply) == span_id(c_process)
    for span in (a_process, a_asks, b_process, b_asks, c_process, *replies):
        assert trace_id(span) == workflow.get_span_context().trace_id, span.name
    # A client span covers the round trip: from before the request went out
    # until after the answer was sent.
    for client, request, reply in (
        (a_asks, requests["b.request"], b_reply),
        (b_asks, requests["c.request"], c_reply),
    ):
        assert client.start_time is not None
        assert request.start_time is not None
        assert client.start_time <= request.start_time
        assert client.end_time is not None
        assert reply.start_time is not None
        assert client.end_time >= reply.start_time


def by_routing_key(found: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    keyed = {}
    for span in found:
        assert span.attributes is not None
        keyed[str(span.attributes["messaging.rabbitmq.destination.routing_key"])] = span
    assert len(keyed) == len(found), [s.name for s in found]
    return keyed


# -- metrics of replies ------------------------------------------------------------------


def published_series(exchange: str, agent: str) -> dict[tuple[str, str], float]:
    """(routing_key, outcome) -> count, of one agent's chimera_messages_published_total."""
    return {
        (sample.labels["routing_key"], sample.labels["outcome"]): sample.value
        for metric in REGISTRY.collect()
        if metric.name == "chimera_messages_published"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels["agent"] == agent
        and sample.labels["exchange"] == exchange
    }


def test_replies_to_many_callers_are_one_series(target: Target, pool: ConnectionPool) -> None:
    exchange = target.exchange()
    responder = Asker(pool, "responder", exchange, target.queue("responder"), None)
    target.start(responder)
    callers = [EventPublisher(pool, f"caller-{n}", exchange) for n in range(3)]
    for caller in callers:  # each asks from a reply-to address of its own
        reply = caller.request(ask("hi"), "responder.request", 10)
        assert isinstance(reply, pb.QueryResponse)
        caller.close()
    assert published_series(exchange, "responder") == {("(reply)", "replied"): 3.0}
