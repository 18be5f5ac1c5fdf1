"""The sync and asyncio APIs behave the same: one set of tests, run against both.

Each flavour is driven through a small harness with the same methods, so a
scenario is written once and parametrised over ``sync`` and ``async``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool, EventPublisher
from messaging import headers as h
from messaging._portal import Portal
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool, AsyncEventPublisher
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.topology import subscriber_topology
from tests.conftest import Names, RawBroker
from tests.integration.helpers import wait_for

Seen = list[tuple[ProtoMessage, str, dict[str, Any]]]


class Harness(Protocol):
    seen: Seen
    exchange: str

    def start_agent(self, queue: str, keys: Sequence[str], **options: Any) -> None: ...

    def publish(self, message: ProtoMessage, key: str, **kwargs: Any) -> str: ...

    def request(self, message: ProtoMessage, key: str, timeout: float) -> ProtoMessage: ...

    def close(self) -> None: ...


def answer_or_fail(message: ProtoMessage) -> messages_pb2.MyResponse:
    assert isinstance(message, messages_pb2.MyRequest)
    if message.text == "fail":
        raise RuntimeError("asked to fail")
    return messages_pb2.MyResponse(text=message.text.upper())


ROUTES: dict[str, type[ProtoMessage]] = {"parity.request": messages_pb2.MyRequest}


class SyncAgent(BaseAgent):
    def __init__(self, seen: Seen, *args: Any, **kwargs: Any) -> None:
        self.seen = seen
        super().__init__(*args, **kwargs)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return ROUTES

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.seen.append((message, routing_key, properties))
        self.publish_response(
            answer_or_fail(message), "parity.response", properties["correlation_id"]
        )


class AsyncAgent(AsyncBaseAgent):
    def __init__(self, seen: Seen, *args: Any, **kwargs: Any) -> None:
        self.seen = seen
        super().__init__(*args, **kwargs)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return ROUTES

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.seen.append((message, routing_key, properties))
        await self.publish_response(
            answer_or_fail(message), "parity.response", properties["correlation_id"]
        )


class SyncHarness:
    def __init__(self, config: RabbitMQConfig, exchange: str) -> None:
        self.seen: Seen = []
        self.exchange = exchange
        self.pool = ConnectionPool(config)
        self.publisher = EventPublisher(self.pool, "parity-client", exchange)
        self.agents: list[tuple[SyncAgent, threading.Thread]] = []

    def start_agent(self, queue: str, keys: Sequence[str], **options: Any) -> None:
        agent = SyncAgent(self.seen, self.pool, "parity", keys, self.exchange, queue, **options)
        thread = threading.Thread(target=agent.start_consuming, daemon=True)
        thread.start()
        wait_for(lambda: agent.is_consuming, what="the sync agent")
        self.agents.append((agent, thread))

    def publish(self, message: ProtoMessage, key: str, **kwargs: Any) -> str:
        return self.publisher.publish(message, key, **kwargs)

    def request(self, message: ProtoMessage, key: str, timeout: float) -> ProtoMessage:
        return self.publisher.request(message, key, timeout)

    def close(self) -> None:
        for agent, thread in self.agents:
            agent.stop()
            thread.join(20)
            agent.close()
        self.publisher.close()
        self.pool.close()


class AsyncHarness:
    """Drives the asyncio API on a loop of its own, in a thread (as an async app would run)."""

    def __init__(self, config: RabbitMQConfig, exchange: str) -> None:
        self.seen: Seen = []
        self.exchange = exchange
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.pool = AsyncConnectionPool(config)
        self.publisher = AsyncEventPublisher(self.pool, "parity-client", exchange)
        self.agents: list[AsyncAgent] = []

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start_agent(self, queue: str, keys: Sequence[str], **options: Any) -> None:
        agent = AsyncAgent(self.seen, self.pool, "parity", keys, self.exchange, queue, **options)
        self._run(agent.start())
        self.agents.append(agent)

    def publish(self, message: ProtoMessage, key: str, **kwargs: Any) -> str:
        return str(self._run(self.publisher.publish(message, key, **kwargs)))

    def request(self, message: ProtoMessage, key: str, timeout: float) -> ProtoMessage:
        reply: ProtoMessage = self._run(self.publisher.request(message, key, timeout))
        return reply

    def close(self) -> None:
        async def shutdown() -> None:
            for agent in self.agents:
                await agent.stop()
            await self.publisher.close()
            await self.pool.close()

        self._run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(params=["sync", "async"])
def harness(
    request: pytest.FixtureRequest, config: RabbitMQConfig, names: Names
) -> Iterator[Harness]:
    kind = SyncHarness if request.param == "sync" else AsyncHarness
    driver: Harness = kind(config, names.exchange)
    yield driver
    driver.close()


def test_round_trip_properties_are_the_same(harness: Harness, names: Names) -> None:
    harness.start_agent(names.queue(), ["parity.request"])
    message_id = harness.publish(
        messages_pb2.MyRequest(text="hello"),
        "parity.request",
        correlation_id="cid-1",
        headers={"x-custom": "yes"},
    )
    wait_for(lambda: len(harness.seen) == 1, what="the message")
    message, key, props = harness.seen[0]
    assert isinstance(message, messages_pb2.MyRequest)
    assert message.text == "hello"
    assert key == "parity.request"
    assert props["message_id"] == message_id
    assert props["correlation_id"] == "cid-1"
    assert props["headers"]["x-custom"] == "yes"
    assert props["type"] == "chimera.v1.MyRequest"
    assert props["attempt"] == 1
    assert props["context"] is None


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_request_reply_and_dead_letters_are_the_same(
    harness: Harness, names: Names, raw: RawBroker, queue_type: str
) -> None:
    queue = names.queue()
    names.queues.add(f"{queue}.retry.1")
    harness.start_agent(queue, ["parity.request"], retry_delays=(0.2,), queue_type=queue_type)
    reply = harness.request(messages_pb2.MyRequest(text="ping"), "parity.request", 20)
    assert isinstance(reply, messages_pb2.MyResponse)
    assert reply.text == "PING"

    harness.publish(messages_pb2.MyRequest(text="fail"), "parity.request", correlation_id="c-f")
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")
    got = raw.get(f"{queue}.dlq")
    assert got is not None
    headers = got[1].headers  # type: ignore[attr-defined]
    assert headers[h.ATTEMPTS] == 2
    assert headers[h.ERROR_MESSAGE] == "asked to fail"
    assert headers[h.ORIGINAL_ROUTING_KEY] == "parity.request"
    attempts = [p["attempt"] for m, _, p in harness.seen if m.text == "fail"]  # type: ignore[attr-defined]
    assert attempts == [1, 2]


def test_async_handlers_run_up_to_prefetch_at_once(config: RabbitMQConfig, names: Names) -> None:
    """A slow async handler holds up others only beyond prefetch_count."""
    running = 0
    peak = 0
    done = 0

    class Slow(AsyncBaseAgent):
        def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
            return ROUTES

        async def route_message(
            self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
        ) -> None:
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.3)
            running -= 1
            done += 1

    async def scenario() -> None:
        pool = AsyncConnectionPool(config)
        agent = Slow(pool, "slow", ["parity.request"], names.exchange, names.queue(), 4)
        publisher = AsyncEventPublisher(pool, "p", names.exchange)
        await agent.start()
        await asyncio.gather(
            *(
                publisher.publish(messages_pb2.MyRequest(text=str(i)), "parity.request")
                for i in range(10)
            )
        )
        for _ in range(200):
            if done == 10:
                break
            await asyncio.sleep(0.05)
        await agent.stop()
        await publisher.close()
        await pool.close()

    asyncio.run(scenario())
    assert done == 10
    assert peak == 4, f"expected 4 handlers at once (prefetch 4), saw at most {peak}"


def test_sync_handlers_never_run_on_the_io_thread(config: RabbitMQConfig, names: Names) -> None:
    threads: list[threading.Thread] = []

    class Where(BaseAgent):
        def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
            return ROUTES

        def route_message(
            self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
        ) -> None:
            threads.append(threading.current_thread())

    pool = ConnectionPool(config)
    agent = Where(pool, "where", ["parity.request"], names.exchange, names.queue())
    worker = threading.Thread(target=agent.start_consuming, daemon=True)
    worker.start()
    wait_for(lambda: agent.is_consuming, what="the agent")
    agent.publish(messages_pb2.MyRequest(text="x"), "parity.request")
    wait_for(lambda: bool(threads), what="the message")
    agent.stop()
    worker.join(20)
    agent.close()
    pool.close()
    assert threads == [worker]
    assert not Portal.get().in_io_thread()


def test_a_quorum_queue_counts_redeliveries_in_the_broker_for_both_apis(
    harness: Harness, names: Names, raw: RawBroker
) -> None:
    """A message redelivered under the limit reaches the handler once, as it is: the
    broker's x-delivery-count, not a copy with the bus's own count."""
    queue = names.queue()
    # Declared as the agent will declare it, so the message can wait there first.
    topology = subscriber_topology(
        harness.exchange, queue, ["parity.request"], queue_type="quorum", delivery_limit=3
    )
    for exchange in topology.exchanges:
        raw.channel.exchange_declare(exchange.name, exchange.type, durable=True)
    for spec in topology.queues:
        raw.channel.queue_declare(spec.name, durable=True, arguments=dict(spec.arguments))
    for binding in topology.bindings:
        raw.channel.queue_bind(binding.queue, binding.exchange, binding.routing_key)
    body = messages_pb2.MyRequest(text="again").SerializeToString()
    raw.publish(harness.exchange, "parity.request", body, type="chimera.v1.MyRequest")
    taken: list[Any] = []

    def take() -> bool:
        method, _props, _body = raw.channel.basic_get(queue, auto_ack=False)
        if method is not None:
            taken.append(method)
        return bool(taken)

    wait_for(take, what="the message")
    raw.channel.basic_reject(taken[0].delivery_tag, requeue=True)
    harness.start_agent(queue, ["parity.request"], queue_type="quorum", max_redeliveries=3)
    wait_for(lambda: len(harness.seen) == 1, what="the redelivered message")
    _, _, props = harness.seen[0]
    assert props["redelivered"] is True
    assert props["headers"]["x-delivery-count"] == 1
    assert h.REDELIVERIES not in props["headers"]
