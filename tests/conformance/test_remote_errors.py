"""A responder's final failure reaches the caller of request() at once, as RemoteError."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import (
    BaseAgent,
    ConnectionPool,
    EventPublisher,
    EventSubscriber,
    RejectedMessageError,
    RemoteError,
)
from messaging import headers as h
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.generated import messages_pb2 as pb
from tests.conformance.conftest import Target


class Failing(BaseAgent):
    """Raises on every attempt; remembers when it gave its last one."""

    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, **options: Any) -> None:
        self.attempts: list[float] = []
        super().__init__(pool, "failing", ["ask.#"], exchange, queue, **options)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"ask.#": pb.QueryRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.attempts.append(time.monotonic())
        raise LookupError(f"no answer to {getattr(message, 'query', '')!r}")


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


def test_a_failing_handler_after_its_retries_raises_remote_error_in_the_caller_at_once(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue(retries=1)
    responder = Failing(pool, exchange, queue, retry_delays=(0.2,))
    target.start(responder)
    caller = EventPublisher(pool, "caller", exchange)
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            caller.request(pb.QueryRequest(query="why?"), "ask.why", timeout=30)
        except RemoteError as exc:
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    asking = threading.Thread(target=ask)
    asking.start()
    target.wait_for(lambda: "at" in outcome, advancing=0.05, what="the RemoteError")
    asking.join(5)
    error: RemoteError = outcome["error"]
    assert len(responder.attempts) == 2  # the first try and one retry
    assert outcome["at"] - responder.attempts[-1] < 1.0
    assert error.error_type == "builtins.LookupError"
    assert error.remote_message == "no answer to 'why?'"
    assert error.agent == "failing"
    assert error.correlation_id
    assert error.correlation_id in str(error)
    # The dead-letter copy is kept as before.
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 1, what="the dead letter")
    (dead,) = target.take_all(f"{queue}.dlq")
    assert dead.headers[h.ERROR_TYPE] == "builtins.LookupError"
    caller.close()


class Refusing(AsyncBaseAgent):
    def __init__(self, pool: AsyncConnectionPool, exchange: str, queue: str) -> None:
        super().__init__(pool, "refusing", ["ask.#"], exchange, queue, retry_delays=(30,))

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"ask.#": pb.QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        raise RejectedMessageError("not found: no such city")


def test_an_error_meant_for_the_caller_is_not_retried_on_the_asyncio_api(target: Target) -> None:
    exchange, queue = target.exchange(), target.queue(retries=1)

    async def main() -> tuple[RemoteError, float]:
        pool = AsyncConnectionPool(target.config)
        responder = Refusing(pool, exchange, queue)
        await responder.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        started = time.monotonic()
        try:
            with pytest.raises(RemoteError) as raised:
                await caller.request(pb.QueryRequest(query="Atlantis"), "ask.city", timeout=30)
            return raised.value, time.monotonic() - started
        finally:
            await caller.stop()
            await responder.stop()
            await pool.close()

    error, elapsed = asyncio.run(main())
    assert error.error_type == "messaging.errors.RejectedMessageError"
    assert error.remote_message == "not found: no such city"
    assert error.agent == "refusing"
    assert elapsed < 10  # not the 30 s timeout, nor the 30 s retry delay
    assert target.depth(f"{queue}.retry.1") == 0
    assert target.depth(f"{queue}.dlq") == 1


class ReplyQueue(EventSubscriber):
    """The spec's form: a queue of one's own that replies arrive in by name."""

    def __init__(self, pool: ConnectionPool, exchange: str, queue: str) -> None:
        self.got: list[tuple[ProtoMessage, dict[str, Any]]] = []
        super().__init__(pool, "asker", exchange, queue, [queue])

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return pb.QueryResponse

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.got.append((message, properties))


def test_a_named_reply_queue_gets_the_error_as_a_documented_property(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    target.start(Failing(pool, exchange, queue))
    replies = ReplyQueue(pool, exchange, target.queue("replies"))
    target.start(replies)
    caller = EventPublisher(pool, "asker", exchange)
    caller.publish_with_reply(pb.QueryRequest(query="x"), "ask.x", replies.queue_name, "corr-1")
    target.wait_for(lambda: bool(replies.got), what="the error reply")
    ((message, properties),) = replies.got
    assert message == pb.QueryResponse()  # an empty answer: old handlers keep working
    assert properties["correlation_id"] == "corr-1"
    assert properties["error"] == {
        "type": "builtins.LookupError",
        "message": "no answer to 'x'",
        "agent": "failing",
    }
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 1, what="the dead letter")
    caller.close()
