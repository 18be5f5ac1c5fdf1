"""Send-only agents (``routing_keys=[]``): they publish and make requests, never consume."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConfigurationError, ConnectionPool
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, wait_for


class Gateway(BaseAgent):
    """Only sends: no routing-key map, no route_message."""


class AsyncGateway(AsyncBaseAgent):
    """Only sends, asyncio."""


class Shouter(BaseAgent):
    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"shout.request": messages_pb2.MyRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, messages_pb2.MyRequest)
        self.publish_response(
            messages_pb2.MyResponse(text=message.text.upper()),
            "shout.response",
            properties["correlation_id"],
        )


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=2, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def test_a_send_only_agent_publishes_and_requests_but_declares_no_queue(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange = names.exchange
    gateway_queue = names.queue("gateway")
    gateway = Gateway(pool, "gateway", [], exchange, gateway_queue)
    assert gateway.send_only
    shouter = Shouter(pool, "shouter", ["shout.request"], exchange, names.queue("shouter"))
    thread = threading.Thread(target=shouter.start_consuming, daemon=True)
    thread.start()
    wait_for(lambda: shouter.is_consuming, what="the shouter to consume")
    try:
        reply = gateway.request(messages_pb2.MyRequest(text="hi"), "shout.request", timeout=20)
        gateway.publish(messages_pb2.MyRequest(text="plain"), "shout.request")
    finally:
        shouter.stop()
        thread.join(20)
        shouter.close()
        gateway.close()
    assert isinstance(reply, messages_pb2.MyResponse)
    assert reply.text == "HI"
    with pytest.raises(Exception, match="NOT_FOUND"):
        raw.depth(gateway_queue)  # nothing was declared for the send-only agent


def test_start_consuming_on_a_send_only_agent_is_a_clear_error(
    pool: ConnectionPool, names: Names
) -> None:
    gateway = Gateway(pool, "gateway", [], names.exchange, names.queue("gateway"))
    with pytest.raises(ConfigurationError, match=r"send-only \(routing_keys=\[\]\)"):
        gateway.start_consuming()
    assert not gateway.is_consuming
    gateway.close()


async def test_the_async_agent_is_send_only_too(config: RabbitMQConfig, names: Names) -> None:
    pool = AsyncConnectionPool(config)
    gateway = AsyncGateway(pool, "gateway", [], names.exchange, names.queue("gateway"))
    try:
        assert gateway.send_only
        with pytest.raises(ConfigurationError, match="send-only"):
            await gateway.start()
        with pytest.raises(ConfigurationError, match="send-only"):
            await gateway.start_consuming()
    finally:
        await gateway.stop()
        await pool.close()


def test_an_agent_that_consumes_must_define_its_handlers(
    pool: ConnectionPool, names: Names
) -> None:
    with pytest.raises(ConfigurationError, match="does not define get_routing_key_map and "):
        Gateway(pool, "gateway", ["shout.request"], names.exchange)


def test_a_plain_subscriber_still_needs_routing_keys(pool: ConnectionPool, names: Names) -> None:
    with pytest.raises(ConfigurationError, match="routing_keys is empty"):
        Recorder(pool, exchange=names.exchange, queue=names.queue("plain"), routing_keys=[])
