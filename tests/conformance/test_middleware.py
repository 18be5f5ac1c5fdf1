"""Middlewares (README "Middlewares"), on both APIs and both transports.

Each test adds user middlewares where users add them (the pool, a subscriber
or agent, a publisher) and checks what reached the handler, the queue and the
DLQ.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import (
    BaseAgent,
    ConfigurationError,
    ConnectionPool,
    Deduplicator,
    Envelope,
    EventPublisher,
    EventSubscriber,
    Middleware,
    Outgoing,
    RejectedMessageError,
    idempotent,
)
from messaging import headers as h
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.generated import messages_pb2 as pb
from tests.conformance.conftest import Target

TOKEN = "s3cret"


class RequireToken(Middleware):
    """The README's example: a message without the right token goes to the DLQ at once."""

    def consume(self, envelope: Envelope) -> None:
        if envelope.headers.get("x-token") != TOKEN:
            raise RejectedMessageError("no valid x-token header")


class StampToken(Middleware):
    """The README's other example: every outgoing message carries a header."""

    def publish(self, outgoing: Outgoing) -> None:
        outgoing.headers["x-token"] = TOKEN


class Trail(Middleware):
    """Writes where it was, before and after the handler, into a shared list."""

    def __init__(self, name: str, trail: list[str]) -> None:
        self.name = name
        self.trail = trail

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        self.trail.append(f"{self.name}>")
        try:
            yield
        except Exception as exc:
            self.trail.append(f"{self.name}!{type(exc).__name__}")
            raise
        self.trail.append(f"<{self.name}")


class AsyncTrail(Middleware):
    """An async-only middleware: on the sync API it is driven on the event loop."""

    def __init__(self, name: str, trail: list[str]) -> None:
        self.name = name
        self.trail = trail

    async def consume_async(self, envelope: Envelope) -> AsyncGenerator[None, None]:
        await asyncio.sleep(0)
        self.trail.append(f"{self.name}>")
        yield
        await asyncio.sleep(0)
        self.trail.append(f"<{self.name}")


class Collector(EventSubscriber):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, **options: Any) -> None:
        self.handled: list[tuple[str, dict[str, Any]]] = []
        self.trail: list[str] | None = None
        self.lock = threading.Lock()
        super().__init__(pool, "collector", exchange, queue, ["work.#"], **options)

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return pb.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        if self.trail is not None:
            self.trail.append("handler")
        if message.query == "fail":
            raise RuntimeError("handler refuses 'fail'")
        with self.lock:
            self.handled.append((message.query, properties))

    def texts(self) -> list[str]:
        with self.lock:
            return [text for text, _ in self.handled]


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


def ask(text: str) -> pb.QueryRequest:
    return pb.QueryRequest(query=text)


def test_an_auth_check_rejects_to_the_dlq_and_a_header_enriches_every_publish(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue(retries=1)
    collector = Collector(pool, exchange, queue, middlewares=[RequireToken()], retry_delays=(30,))
    target.start(collector)
    stamped = EventPublisher(pool, "trusted", exchange, middlewares=[StampToken()])
    plain = EventPublisher(pool, "stranger", exchange)
    stamped.publish(ask("with token"), "work.a")
    plain.publish(ask("without token"), "work.b")
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 1, what="the rejected message")
    target.wait_for(lambda: collector.texts() == ["with token"], what="the accepted message")
    (_, properties) = collector.handled[0]
    assert properties["headers"]["x-token"] == TOKEN
    (dead,) = target.take_all(f"{queue}.dlq")
    assert str(dead.headers[h.ERROR_TYPE]).endswith("RejectedMessageError")
    assert "no valid x-token header" in str(dead.headers[h.ERROR_MESSAGE])
    assert dead.headers[h.ATTEMPTS] == 1  # not retried, although retry_delays were given
    assert target.depth(f"{queue}.retry.1") == 0
    stamped.close()
    plain.close()


def test_the_pools_middlewares_run_first_then_the_subscribers_in_order(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    trail: list[str] = []
    pool.use(Trail("pool", trail))
    collector = Collector(pool, exchange, queue, middlewares=[Trail("first", trail)])
    collector.use(AsyncTrail("async", trail))
    collector.trail = trail
    target.start(collector)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("hello"), "work.a")
    target.wait_for(lambda: "<pool" in trail, what="the pool's middleware to finish")
    assert trail == ["pool>", "first>", "async>", "handler", "<async", "<first", "<pool"]
    trail.clear()
    publisher.publish(ask("fail"), "work.b")
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 1, what="the failed message")
    assert trail[:4] == ["pool>", "first>", "async>", "handler"]
    # The async-only middleware never saw the error (it has no except), the others did.
    assert trail[4:] == ["first!RuntimeError", "pool!RuntimeError"]
    publisher.close()


class SwallowErrors(Middleware):
    """Turns a handler's failure into a success (the message is acked)."""

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        try:
            yield
        except RuntimeError:
            envelope.state["swallowed"] = True


class SkipAll(Middleware):
    """Ends every message before the handler: acked, never handled."""

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        return
        yield


def test_a_middleware_can_absorb_a_failure_or_skip_the_handler(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    absorbing_queue, skipping_queue = target.queue("absorb"), target.queue("skip")
    absorbing = Collector(pool, exchange, absorbing_queue, middlewares=[SwallowErrors()])
    skipping = Collector(pool, exchange, skipping_queue, middlewares=[SkipAll()])
    target.start(absorbing)
    target.start(skipping)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("fail"), "work.a")
    publisher.publish(ask("fine"), "work.b")
    target.wait_for(lambda: absorbing.texts() == ["fine"], what="the absorbing subscriber")
    for queue in (absorbing_queue, skipping_queue):
        target.wait_for(lambda q=queue: target.depth(q) == 0, what=f"{queue} to drain")  # type: ignore[misc]
        assert target.depth(f"{queue}.dlq") == 0
    assert skipping.texts() == []
    publisher.close()


class RefuseSecrets(Middleware):
    def publish(self, outgoing: Outgoing) -> None:
        message = outgoing.message
        if isinstance(message, pb.QueryRequest) and "password" in message.query:
            raise RejectedMessageError("refusing to publish a password")


def test_a_publish_middleware_that_raises_sends_nothing(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    collector = Collector(pool, exchange, queue)
    target.start(collector)
    pool.use(RefuseSecrets())
    publisher = EventPublisher(pool, "sender", exchange)
    with pytest.raises(RejectedMessageError, match="password"):
        publisher.publish(ask("my password is hunter2"), "work.a")
    publisher.publish(ask("harmless"), "work.b")
    target.wait_for(lambda: collector.texts() == ["harmless"], what="the harmless message")
    assert target.depth(queue) == 0
    publisher.close()


class Counted(BaseAgent):
    """A BaseAgent as the README writes one, with @idempotent on route_message."""

    dedup = Deduplicator(ttl=60)

    def __init__(self, pool: ConnectionPool, exchange: str, queue: str) -> None:
        self.seen: list[str] = []
        super().__init__(pool, "counted", ["work.#"], exchange, queue)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"work.#": pb.QueryRequest}

    @idempotent(dedup)
    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        self.seen.append(message.query)


def test_idempotent_on_route_message_skips_a_repeated_message_id(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    agent = Counted(pool, exchange, queue)
    target.start(agent)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("once"), "work.a", message_id=f"{target.prefix}-m1")
    publisher.publish(ask("once again"), "work.a", message_id=f"{target.prefix}-m1")
    publisher.publish(ask("other"), "work.a", message_id=f"{target.prefix}-m2")
    target.wait_for(lambda: agent.seen == ["once", "other"], what="two distinct messages")
    target.wait_for(lambda: target.depth(queue) == 0, what="the duplicate to be acked")
    assert target.depth(f"{queue}.dlq") == 0
    publisher.close()


# -- the asyncio API ---------------------------------------------------------------------


class AsyncEcho(AsyncBaseAgent):
    def __init__(
        self, pool: AsyncConnectionPool, exchange: str, queue: str, trail: list[str]
    ) -> None:
        self.trail = trail
        super().__init__(
            pool,
            "echo",
            ["echo.request"],
            exchange,
            queue,
            middlewares=[Trail("sync", trail), AsyncTrail("async", trail), RequireToken()],
        )

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"echo.request": pb.QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        self.trail.append("handler")
        reply = pb.QueryResponse(answer=message.query.upper())
        await self.publish_response(reply, "echo.response", properties["correlation_id"])


class SeeReplies(Middleware):
    """Records the headers of every reply it publishes (an async publish hook)."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []

    async def publish_async(self, outgoing: Outgoing) -> None:
        outgoing.headers["x-replied-by"] = outgoing.agent_name
        if outgoing.is_reply:
            self.replies.append(dict(outgoing.headers))


def test_async_agent_runs_sync_and_async_middlewares_and_publish_hooks(target: Target) -> None:
    exchange, queue = target.exchange(), target.queue("echo")
    trail: list[str] = []
    seen = SeeReplies()

    async def main() -> str:
        pool = AsyncConnectionPool(target.config)
        pool.use(StampToken())  # every request of this pool carries the token
        echo = AsyncEcho(pool, exchange, queue, trail)
        echo.use(seen)
        await echo.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        try:
            reply = await caller.request(ask("hi"), "echo.request", timeout=10)
        finally:
            await caller.stop()
            await echo.stop()
            await pool.close()
        assert isinstance(reply, pb.QueryResponse)
        return reply.answer

    assert asyncio.run(main()) == "HI"
    assert trail == ["sync>", "async>", "handler", "<async", "<sync"]
    (reply_headers,) = seen.replies
    assert reply_headers["x-replied-by"] == "echo"
    assert reply_headers["x-token"] == TOKEN  # the pool's hook ran first


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "middlewares",
    [RequireToken(), [RequireToken], ["not a middleware"], "RequireToken"],
    ids=["bare-instance", "class", "string-item", "string"],
)
def test_a_wrong_middlewares_argument_is_a_clear_error_that_declares_nothing(
    target: Target, pool: ConnectionPool, middlewares: Any
) -> None:
    exchange, queue = target.exchange(), target.queue()
    with pytest.raises(ConfigurationError, match="Middleware"):
        Collector(pool, exchange, queue, middlewares=middlewares)
    with pytest.raises(ConfigurationError, match="Middleware"):
        EventPublisher(pool, "sender", exchange, middlewares=middlewares)
    with pytest.raises(ConfigurationError, match="Middleware"):
        pool.use(RequireToken)  # type: ignore[arg-type]
    assert target.depth(queue) is None  # nothing was declared
