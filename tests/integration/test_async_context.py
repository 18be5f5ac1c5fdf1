"""The asyncio classes as async context managers, on RabbitMQ and on the in-process broker.

``async with`` a subscriber or a consuming agent starts it and stops it on the
way out (also when the block raises); a send-only agent starts nothing; a
publisher and a pool close.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import MemoryTransport
from messaging.aio import (
    AsyncBaseAgent,
    AsyncConnectionPool,
    AsyncEventPublisher,
    AsyncEventSubscriber,
)
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.transport.memory import MemoryBroker
from tests.conftest import Names


@pytest.fixture(params=["rabbitmq", "memory"])
def make_pool(request: pytest.FixtureRequest, config: RabbitMQConfig) -> Iterator[Any]:
    """A factory of pools on the real broker, or on a fresh in-process one."""
    if request.param == "rabbitmq":
        yield lambda: AsyncConnectionPool(config, max_retries=2, initial_retry_delay=0.2)
    else:
        transport = MemoryTransport(MemoryBroker(f"ctx-{uuid.uuid4().hex[:8]}"))
        yield lambda: AsyncConnectionPool(config, transport=transport)


class Seen(AsyncEventSubscriber):
    def __init__(self, pool: AsyncConnectionPool, names: Names, exchange: str) -> None:
        super().__init__(pool, "seen", exchange, names.queue("seen"), ["ctx.#"])
        self.texts: list[str] = []
        self.got = asyncio.Event()

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    async def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        assert isinstance(message, messages_pb2.QueryRequest)
        self.texts.append(message.query)
        self.got.set()


class Upper(AsyncBaseAgent):
    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"upper.request": messages_pb2.MyRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, messages_pb2.MyRequest)
        await self.publish_response(
            messages_pb2.MyResponse(text=message.text.upper()),
            "upper.response",
            properties["correlation_id"],
        )


async def test_a_subscriber_consumes_inside_the_block_and_a_publisher_closes(
    make_pool: Any, names: Names
) -> None:
    exchange = names.exchange
    async with make_pool() as pool:
        async with (
            Seen(pool, names, exchange) as seen,
            AsyncEventPublisher(pool, "ctx_client", exchange) as publisher,
        ):
            assert seen.is_consuming  # started on the way in
            await publisher.publish(messages_pb2.QueryRequest(query="inside"), "ctx.one")
            await asyncio.wait_for(seen.got.wait(), 10)
        assert not seen.is_consuming  # stopped on the way out
        assert publisher.closed
        assert seen.texts == ["inside"]
    assert pool.closed


async def test_a_block_that_raises_still_stops_the_subscriber(make_pool: Any, names: Names) -> None:
    async with make_pool() as pool:
        seen = Seen(pool, names, names.exchange)
        consuming_inside: list[bool] = []

        async def block() -> None:
            async with seen:
                consuming_inside.append(seen.is_consuming)
                raise LookupError("in the block")

        with pytest.raises(LookupError, match="in the block"):
            await block()
        assert consuming_inside == [True]
        assert not seen.is_consuming


async def test_an_agent_answers_inside_the_block_and_a_send_only_one_starts_nothing(
    make_pool: Any, names: Names
) -> None:
    exchange = names.exchange
    async with make_pool() as pool:
        async with (
            Upper(pool, "upper", ["upper.request"], exchange, names.queue("upper")) as upper,
            Upper(pool, "client", [], exchange) as client,
        ):
            assert upper.is_consuming
            assert client.send_only
            assert not client.is_consuming
            reply = await client.request(messages_pb2.MyRequest(text="hi"), "upper.request", 10)
        assert isinstance(reply, messages_pb2.MyResponse)
        assert reply.text == "HI"
        assert not upper.is_consuming
        assert upper.agent.publisher.closed
        assert client.agent.publisher.closed
