"""Discovery on both transports: a running agent announces itself, a stopped one withdraws.

Each test announces on a discovery exchange of its own (``DISCOVERY__EXCHANGE``,
deleted afterwards), and reads the announcements two ways: raw, from a queue
bound to that exchange (what a client in another language sees), and through
:class:`messaging.discovery.Directory`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool, EventPublisher, EventSubscriber
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.discovery import AgentCard, Directory
from messaging.discovery.announcer import FAILURES
from messaging.discovery.card import SCHEMA
from messaging.discovery.hooks import announcer_of
from messaging.generated import messages_pb2 as pb
from tests.conformance.conftest import Target

INTERVAL = 0.2


class Weather(BaseAgent):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, **options: Any) -> None:
        super().__init__(pool, "weather", ["weather.request"], exchange, queue, **options)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"weather.request": pb.QueryRequest}

    def get_publish_map(self) -> dict[str, type[ProtoMessage]]:
        return {"weather.reply": pb.QueryResponse}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        return None


class Printer(EventSubscriber):
    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return pb.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        return None


@pytest.fixture
def discovery(target: Target, monkeypatch: pytest.MonkeyPatch) -> str:
    """Discovery on, fast, on an exchange of this test's own; returns its name."""
    exchange = target.exchange("discovery")
    monkeypatch.setenv("DISCOVERY__ENABLED", "true")
    monkeypatch.setenv("DISCOVERY__INTERVAL", str(INTERVAL))
    monkeypatch.setenv("DISCOVERY__EXCHANGE", exchange)
    return exchange


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


class RawListener:
    """A queue bound to the discovery exchange, read raw: the cards as JSON, in order."""

    def __init__(self, target: Target, exchange: str) -> None:
        self.target = target
        self.queue = target.queue("listener")
        assert target.declare_raw(self.queue, {}, bind=(exchange, "agent.*")) is None
        self.cards: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        self.cards += [json.loads(taken.body) for taken in self.target.take_all(self.queue)]
        return self.cards

    def wait_for(self, count: int, event: str = "announce") -> list[dict[str, Any]]:
        def enough() -> bool:
            return len([c for c in self.read() if c["event"] == event]) >= count

        self.target.wait_for(enough, what=f"{count} {event} card(s)")
        return [c for c in self.cards if c["event"] == event]


def test_a_running_agent_announces_itself_with_its_card_and_withdraws_on_stop(
    target: Target, pool: ConnectionPool, discovery: str
) -> None:
    listener = RawListener(target, discovery)
    exchange, queue = target.exchange(), target.queue()
    agent = Weather(pool, exchange, queue, version="2.1.0")
    target.start(agent)
    beats = listener.wait_for(2)
    first = beats[0]
    assert first["schema"] == SCHEMA
    assert first["event"] == "announce"
    assert first["name"] == "weather"
    assert first["kind"] == "agent"
    assert first["version"] == "2.1.0"
    assert first["exchange"] == exchange
    assert first["queue"] == queue
    assert first["routing_keys"] == ["weather.request"]
    assert first["request_types"] == {"weather.request": "chimera.v1.QueryRequest"}
    assert first["reply_types"] == {"weather.reply": "chimera.v1.QueryResponse"}
    assert first["host"] == socket.gethostname()
    assert first["pid"] == os.getpid()
    assert first["interval"] == INTERVAL
    assert {card["instance"] for card in beats} == {first["instance"]}  # one instance, beating
    assert AgentCard.from_json(json.dumps(first).encode()).since.tzinfo is not None

    target.stop(agent)
    (withdrawal,) = listener.wait_for(1, "withdraw")
    assert withdrawal["instance"] == first["instance"]
    said = len(listener.read())
    time.sleep(3 * INTERVAL)
    assert len(listener.read()) == said, "a stopped agent went on announcing itself"


def test_a_plain_subscriber_announces_what_its_message_class_names(
    target: Target, pool: ConnectionPool, discovery: str
) -> None:
    listener = RawListener(target, discovery)
    exchange, queue = target.exchange(), target.queue()
    printer = Printer(pool, "printer", exchange, queue, routing_keys=["query.*"])
    target.start(printer)
    found = listener.wait_for(1)
    assert found[0]["kind"] == "subscriber"
    assert found[0]["request_types"] == {"query.*": "chimera.v1.QueryRequest"}
    assert found[0]["reply_types"] == {}
    target.stop(printer)


def test_nothing_is_announced_unless_discovery_is_enabled(
    target: Target, pool: ConnectionPool, discovery: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = RawListener(target, discovery)
    monkeypatch.delenv("DISCOVERY__ENABLED")
    agent = Weather(pool, target.exchange(), target.queue())
    target.start(agent)
    time.sleep(3 * INTERVAL)
    target.stop(agent)
    assert listener.read() == []


class AsyncWeather(AsyncBaseAgent):
    def __init__(self, pool: AsyncConnectionPool, exchange: str, queue: str) -> None:
        super().__init__(pool, "async_weather", ["weather.request"], exchange, queue)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"weather.request": pb.QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        return None


def test_the_directory_lists_an_async_agent_and_forgets_it_when_it_stops(
    target: Target, discovery: str
) -> None:
    exchange, queue = target.exchange(), target.queue()

    async def main() -> tuple[list[AgentCard], list[AgentCard]]:
        pool = AsyncConnectionPool(target.config)
        try:
            async with Directory(pool, discovery) as directory:
                agent = AsyncWeather(pool, exchange, queue)
                await agent.start()
                while not directory.agents():
                    await directory.changed(5.0)
                running = directory.agents()
                await agent.stop()
                while directory.agents():
                    assert await directory.changed(5.0), "no withdrawal heard"
                return running, directory.agents()
        finally:
            await pool.close()

    running, after = asyncio.run(main())
    assert [(c.name, c.kind, c.queue, c.exchange) for c in running] == [
        ("async_weather", "agent", queue, exchange)
    ]
    assert running[0].request_types == {"weather.request": "chimera.v1.QueryRequest"}
    assert after == []


def test_an_agent_whose_announcements_fail_carries_on_and_counts_them(
    target: Target,
    pool: ConnectionPool,
    discovery: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exchange, queue = target.exchange(), target.queue()
    # The agent's own dead-letter exchange is a direct exchange: declaring it as the
    # (topic) discovery exchange is refused by the broker, on every heartbeat.
    monkeypatch.setenv("DISCOVERY__EXCHANGE", f"{exchange}.dlx")
    handled: list[str] = []

    class Recording(Weather):
        def route_message(
            self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
        ) -> None:
            handled.append(routing_key)

    failures = FAILURES.labels("weather")
    before = failures._value.get()
    agent = Recording(pool, exchange, queue)
    caplog.set_level(logging.DEBUG, "messaging.discovery")
    target.start(agent)
    target.wait_for(lambda: failures._value.get() >= before + 2, what="two failed heartbeats")
    assert agent.is_consuming
    publisher = EventPublisher(pool, "asker", exchange)
    publisher.publish(pb.QueryRequest(query="still there?"), "weather.request")
    publisher.close()
    target.wait_for(lambda: handled == ["weather.request"], what="the message handled")
    target.stop(agent)
    warnings = [
        r
        for r in caplog.records
        if r.name == "messaging.discovery" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "could not announce weather" in warnings[0].getMessage()


def test_an_announcer_whose_pool_closes_under_it_ends_and_is_forgotten(
    target: Target, discovery: str
) -> None:
    exchange, queue = target.exchange(), target.queue()

    async def main() -> tuple[int, bool]:
        pool = AsyncConnectionPool(target.config)
        agent = AsyncWeather(pool, exchange, queue)
        await agent.start()
        announcer = announcer_of(agent)
        assert announcer is not None
        for _ in range(500):  # the first announcement, within 5 s
            if announcer.sent:
                break
            await asyncio.sleep(0.01)
        await pool.close()  # no stop(): the heartbeat must end by itself
        for _ in range(500):
            if announcer_of(agent) is None:
                break
            await asyncio.sleep(0.01)
        return announcer.sent, announcer_of(agent) is None

    sent, forgotten = asyncio.run(main())
    assert sent >= 1
    assert forgotten, "the announcer outlived its pool"
