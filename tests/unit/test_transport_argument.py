"""A pool given its transport: ``ConnectionPool(..., transport=...)``.

The config points at a port no broker listens on: an agent that answers a
request there ran on the transport it was given, not on RabbitMQ.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from pydantic import SecretStr

from messaging import (
    AmqpTransport,
    ConfigurationError,
    ConnectionPool,
    MemoryTransport,
    MessagingError,
    Transport,
)
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.transport.memory import MemoryBroker

NOWHERE = RabbitMQConfig(host="127.0.0.1", port=1, connection_name="no-rabbit")
"""A RabbitMQ no one runs: a pool that reached it would fail to connect."""


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


async def test_a_pool_given_a_memory_broker_runs_an_agent_end_to_end() -> None:
    broker = MemoryBroker(f"given-{uuid.uuid4().hex[:8]}")  # not registered under any URL
    pool = AsyncConnectionPool(NOWHERE, max_retries=0, transport=MemoryTransport(broker))
    exchange = f"given.{uuid.uuid4().hex[:8]}"
    agent = Upper(pool, "upper", ["upper.request"], exchange, f"{exchange}.upper")
    client = Upper(pool, "client", [], exchange)
    await agent.start()
    try:
        reply = await client.request(messages_pb2.MyRequest(text="hi"), "upper.request", 5)
    finally:
        await agent.stop()
        await client.agent.close()
        await pool.close()
    assert isinstance(reply, messages_pb2.MyResponse)
    assert reply.text == "HI"
    assert f"{exchange}.upper" in broker.queue_names()  # the given broker carried it


def test_the_sync_pool_passes_its_transport_on() -> None:
    broker = MemoryBroker(f"given-{uuid.uuid4().hex[:8]}")
    pool = ConnectionPool(NOWHERE, max_retries=0, transport=MemoryTransport(broker))
    try:
        pool.connect()  # RabbitMQ at NOWHERE would refuse this
        assert pool.health().connected
    finally:
        pool.close()


def test_the_url_still_picks_the_transport_when_none_is_given() -> None:
    memory = AsyncConnectionPool(RabbitMQConfig(url=SecretStr("memory://")))
    amqp = AsyncConnectionPool(NOWHERE)
    assert type(memory.publishing).__name__ == "MemoryConnection"
    assert type(amqp.publishing).__name__ == "ChannelManager"


def test_the_transports_are_transports() -> None:
    given: list[Transport] = [AmqpTransport(), MemoryTransport(), MemoryTransport(MemoryBroker())]
    for transport in given:
        assert callable(transport.open_connection)
    assert repr(MemoryTransport(MemoryBroker("b"))) == "MemoryTransport('b')"


@pytest.mark.parametrize("pool_class", [AsyncConnectionPool, ConnectionPool])
@pytest.mark.parametrize("bad", ["memory://", MemoryBroker, object(), 3])
def test_anything_else_as_a_transport_is_a_configuration_error(pool_class: Any, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="transport must be a Transport") as raised:
        pool_class(NOWHERE, transport=bad)
    assert isinstance(raised.value, MessagingError)
