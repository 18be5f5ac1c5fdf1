"""Typed handlers (README "Typed handlers"): a function per routing key, its return the reply."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from messaging import (
    BaseAgent,
    ConfigurationError,
    ConnectionPool,
    EventPublisher,
    RemoteError,
    RequestContext,
)
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.generated import messages_pb2 as pb
from tests.conformance.conftest import Target


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


def test_a_typed_handler_answers_with_its_return_value(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue("weather")
    agent = BaseAgent(pool, "weather", exchange_name=exchange, queue_name=queue)
    seen: list[RequestContext] = []

    @agent.handler("weather.request")
    def forecast(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
        seen.append(ctx)
        if request.query == "Atlantis":
            raise LookupError("no such city")
        return pb.QueryResponse(answer=f"sunny in {request.query}")

    target.start(agent)
    caller = EventPublisher(pool, "caller", exchange)
    question = pb.QueryRequest(query="Lisbon")
    question.metadata.source_agent = "caller"
    reply = caller.request(question, "weather.request", 10, response_type=pb.QueryResponse)
    assert reply.answer == "sunny in Lisbon"
    (ctx,) = seen
    assert ctx.routing_key == "weather.request"
    assert ctx.correlation_id
    assert ctx.metadata.source_agent == "caller"
    assert ctx.agent_name == "weather"
    assert not ctx.cancelled
    with pytest.raises(RemoteError, match="no such city"):
        caller.request(pb.QueryRequest(query="Atlantis"), "weather.request", 10)
    assert agent.get_routing_key_map() == {"weather.request": pb.QueryRequest}
    caller.close()


def test_a_reply_without_reply_to_goes_to_the_reply_key(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    agent = BaseAgent(pool, "doubler", exchange_name=exchange, queue_name=target.queue("d"))

    @agent.handler("numbers.in", reply_key="numbers.out")
    def double(request: pb.QueryRequest) -> pb.QueryResponse:
        return pb.QueryResponse(answer=request.query * 2)

    sink = BaseAgent(pool, "sink", exchange_name=exchange, queue_name=target.queue("sink"))
    got: list[str] = []

    @sink.handler("numbers.out")
    def collect(reply: pb.QueryResponse) -> None:
        got.append(reply.answer)

    target.start(agent)
    target.start(sink)
    assert agent.get_publish_map() == {"numbers.out": pb.QueryResponse}
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(pb.QueryRequest(query="ab"), "numbers.in")
    target.wait_for(lambda: got == ["abab"], what="the doubled reply")
    publisher.close()


def test_async_typed_handlers_on_the_asyncio_api(target: Target) -> None:
    exchange, queue = target.exchange(), target.queue("echo")

    async def main() -> str:
        pool = AsyncConnectionPool(target.config)
        agent = AsyncBaseAgent(pool, "echo", exchange_name=exchange, queue_name=queue)

        @agent.handler("echo.request")
        async def echo(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
            await asyncio.sleep(0)
            return pb.QueryResponse(answer=f"{request.query}!{ctx.routing_key}")

        await agent.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        try:
            reply = await caller.request(
                pb.QueryRequest(query="hi"), "echo.request", 10, response_type=pb.QueryResponse
            )
        finally:
            await caller.stop()
            await agent.stop()
            await pool.close()
        return reply.answer

    assert asyncio.run(main()) == "hi!echo.request"


def test_a_handler_that_cannot_be_typed_is_refused_and_changes_nothing(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    agent = BaseAgent(pool, "strict", exchange_name=exchange, queue_name=queue)

    def untyped(request: Any) -> None: ...

    async def asynchronous(request: pb.QueryRequest) -> None: ...

    def two_messages(a: pb.QueryRequest, b: pb.QueryRequest) -> None: ...

    def returns_text(request: pb.QueryRequest) -> str:
        return ""

    refused: list[tuple[Callable[..., Any], str]] = [
        (untyped, "neither the request"),
        (asynchronous, "use AsyncBaseAgent"),
        (two_messages, "two messages"),
        (returns_text, "return a protobuf message"),
    ]
    for function, complaint in refused:
        with pytest.raises(ConfigurationError, match=complaint):
            agent.handler("strict.request")(function)
    assert agent.send_only  # nothing was bound

    @agent.handler("strict.request")
    def fine(request: pb.QueryRequest) -> None: ...

    with pytest.raises(ConfigurationError, match="has a handler already"):
        agent.handler("strict.request")(fine)
    target.start(agent)
    with pytest.raises(ConfigurationError, match="before start_consuming"):
        agent.handler("strict.other")(fine)
    assert target.depth(queue) == 0
