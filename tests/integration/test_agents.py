"""BaseAgent and AsyncBaseAgent on the real broker: routing, context, request/response."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from prometheus_client import REGISTRY

from messaging import BaseAgent, ConnectionPool, RequestTimeoutError, UnroutableMessageError
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.config import RabbitMQConfig
from messaging.errors import PublishTimeoutError
from messaging.generated import messages_pb2
from tests.conftest import Names, RawBroker
from tests.integration.helpers import unacked, wait_for


class Echo(BaseAgent):
    """Answers MyRequest with MyResponse(text=upper) after ``delay`` seconds."""

    def __init__(
        self, pool: ConnectionPool, names: Names, exchange: str, delay: float = 0.0
    ) -> None:
        self.delay = delay
        super().__init__(
            pool, "echo", ["echo.request"], exchange, names.queue("echo"), prefetch_count=10
        )

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"echo.request": messages_pb2.MyRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, messages_pb2.MyRequest)
        if self.delay:
            time.sleep(self.delay)
        self.publish_response(
            messages_pb2.MyResponse(text=message.text.upper()),
            "echo.response",
            properties["correlation_id"],
        )


class Collector(BaseAgent):
    """Records (class, routing key, properties) of everything its map admits."""

    def __init__(
        self,
        pool: ConnectionPool,
        names: Names,
        exchange: str,
        routes: dict[str, type[ProtoMessage]],
        keys: Sequence[str],
    ) -> None:
        self.routes = routes
        self.seen: list[tuple[ProtoMessage, str, dict[str, Any]]] = []
        super().__init__(pool, "collector", keys, exchange, names.queue("collector"))

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return self.routes

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.seen.append((message, routing_key, properties))


def running(agent: BaseAgent) -> threading.Thread:
    thread = threading.Thread(target=agent.start_consuming, daemon=True)
    thread.start()
    wait_for(lambda: agent.is_consuming, what=f"{agent.agent_name} to consume")
    return thread


def stopped(agent: BaseAgent, thread: threading.Thread) -> None:
    agent.stop()
    thread.join(20)
    agent.close()


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=2, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def test_routing_key_map_patterns_pick_the_class(pool: ConnectionPool, names: Names) -> None:
    exchange = names.exchange
    collector = Collector(
        pool,
        names,
        exchange,
        {"query.request": messages_pb2.QueryRequest, "data.*": messages_pb2.DataRequest},
        ["query.request", "data.*"],
    )
    thread = running(collector)
    try:
        collector.publish(messages_pb2.QueryRequest(query="q"), "query.request")
        collector.publish(messages_pb2.DataRequest(symbol="ZEC"), "data.request")
        collector.publish(messages_pb2.DataRequest(symbol="BTC"), "data.refresh")
        wait_for(lambda: len(collector.seen) == 3, what="three messages")
    finally:
        stopped(collector, thread)
    kinds = [(type(m).__name__, key) for m, key, _ in collector.seen]
    assert kinds == [
        ("QueryRequest", "query.request"),
        ("DataRequest", "data.request"),
        ("DataRequest", "data.refresh"),
    ]


def test_workflow_context_comes_back_once(pool: ConnectionPool, names: Names) -> None:
    exchange = names.exchange
    echo = Echo(pool, names, exchange)
    asker = Collector(
        pool, names, exchange, {"echo.response": messages_pb2.MyResponse}, ["echo.response"]
    )
    threads = [running(echo), running(asker)]
    try:
        correlation_id = asker.publish_request(
            messages_pb2.MyRequest(text="step one"), "echo.request", context={"step": 1}
        )
        wait_for(lambda: len(asker.seen) == 1, what="the answer")
        # A second message with the same correlation id finds no context: it was released.
        asker.publish(
            messages_pb2.MyResponse(text="again"), "echo.response", correlation_id=correlation_id
        )
        wait_for(lambda: len(asker.seen) == 2, what="the repeat")
    finally:
        stopped(echo, threads[0])
        stopped(asker, threads[1])
    first, second = asker.seen[0][2], asker.seen[1][2]
    assert first["correlation_id"] == correlation_id
    assert first["context"] == {"step": 1}
    assert second["context"] is None


def test_request_from_many_threads_gets_each_its_own_reply(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange = names.exchange
    echo = Echo(pool, names, exchange)
    client = Collector(pool, names, exchange, {}, ["unused.key"])
    thread = running(echo)
    try:
        with ThreadPoolExecutor(max_workers=16) as workers:
            texts = [f"message {i}" for i in range(64)]
            replies = list(
                workers.map(
                    lambda t: client.request(messages_pb2.MyRequest(text=t), "echo.request", 20),
                    texts,
                )
            )
    finally:
        stopped(echo, thread)
        client.close()
    assert [r.text for r in replies] == [t.upper() for t in texts]  # type: ignore[attr-defined]
    assert raw.depth(f"{names.prefix}.echo.dlq") == 0, "answering a request must not fail it"


def test_request_times_out_and_a_late_reply_goes_to_nobody(
    pool: ConnectionPool, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = names.exchange
    echo = Echo(pool, names, exchange, delay=1.5)
    client = Collector(pool, names, exchange, {}, ["unused.key"])
    thread = running(echo)
    try:
        with pytest.raises(RequestTimeoutError, match="correlation_id="):
            client.request(messages_pb2.MyRequest(text="slow"), "echo.request", timeout=0.3)
        echo.delay = 0.0
        with caplog.at_level(logging.WARNING, logger="messaging.rpc"):
            reply = client.request(messages_pb2.MyRequest(text="next"), "echo.request", 20)
            wait_for(
                lambda: any(
                    "after its caller stopped waiting" in r.message for r in caplog.records
                ),
                what="the late reply warning",
            )
    finally:
        stopped(echo, thread)
        client.close()
    assert reply.text == "NEXT"  # type: ignore[attr-defined]


class AsyncEcho(AsyncBaseAgent):
    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"echo.request": messages_pb2.MyRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, messages_pb2.MyRequest)
        await asyncio.sleep(0.01)
        await self.publish_response(
            messages_pb2.MyResponse(text=message.text.upper()),
            "echo.response",
            properties["correlation_id"],
        )


async def test_async_agent_answers_many_concurrent_requests(
    config: RabbitMQConfig, names: Names
) -> None:
    pool = AsyncConnectionPool(config)
    exchange = names.exchange
    echo = AsyncEcho(pool, "echo", ["echo.request"], exchange, names.queue("aecho"), 20)
    client = AsyncEcho(pool, "client", ["unused.key"], exchange, names.queue("aclient"))
    await echo.start()
    try:
        texts = [f"task {i}" for i in range(100)]
        replies = await asyncio.gather(
            *(client.request(messages_pb2.MyRequest(text=t), "echo.request", 20) for t in texts)
        )
    finally:
        await echo.stop()
        await client.agent.close()
        await pool.close()
    assert [r.text for r in replies] == [t.upper() for t in texts]  # type: ignore[attr-defined]


def test_a_request_whose_caller_gave_up_expires_unprocessed(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    """The request carries expiration = the caller's timeout: nobody processes it later.
    It is transient: it cannot be answered after a broker restart anyway."""
    exchange = names.exchange
    echo = Echo(pool, names, exchange)
    stopped(echo, running(echo))  # its queue exists (durable) with nobody consuming
    client = Collector(pool, names, exchange, {}, ["unused.key"])
    try:
        with pytest.raises(RequestTimeoutError):
            client.request(messages_pb2.MyRequest(text="lost"), "echo.request", timeout=0.3)
        queue = f"{names.prefix}.echo"
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the request to expire")
        assert raw.depth(queue) == 0
        got = raw.get(f"{queue}.dlq")
        assert got is not None
        props: Any = got[1]
        death = props.headers["x-death"][0]
        assert death["reason"] == "expired"
        assert death["original-expiration"] == "300"  # the broker moves it here
        assert props.delivery_mode == 1  # requests are transient (aio/rpc.py says why)
    finally:
        client.close()


def test_a_request_nobody_can_receive_fails_at_once_not_at_its_timeout(
    pool: ConnectionPool, names: Names
) -> None:
    """Reply or return: an unroutable request raises as soon as the broker returns it."""
    client = Collector(pool, names, names.exchange, {}, ["unused.key"])
    try:
        started = time.monotonic()
        with pytest.raises(UnroutableMessageError):
            client.request(messages_pb2.MyRequest(text="?"), "nobody.listens", timeout=20)
        assert time.monotonic() - started < 10, "waited for the timeout instead of the return"
    finally:
        client.close()


def published(exchange: str, agent: str, outcome: str) -> float:
    """chimera_messages_published for one agent and exchange, all routing keys."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "chimera_messages_published"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels.get("agent") == agent
        and sample.labels.get("exchange") == exchange
        and sample.labels.get("outcome") == outcome
    )


def reply_keys(exchange: str, agent: str) -> set[str]:
    """The routing key labels of one agent's published counters."""
    return {
        sample.labels["routing_key"]
        for metric in REGISTRY.collect()
        if metric.name == "chimera_messages_published"
        for sample in metric.samples
        if sample.labels.get("agent") == agent and sample.labels.get("exchange") == exchange
    }


def test_replies_to_direct_reply_to_go_unconfirmed_on_a_reply_channel(
    pool: ConnectionPool, names: Names
) -> None:
    exchange = names.exchange
    echo = Echo(pool, names, exchange)
    thread = running(echo)
    client = Collector(pool, names, exchange, {}, ["unused.key"])
    try:
        for text in ("a", "b", "c"):
            reply = client.request(messages_pb2.MyRequest(text=text), "echo.request", 20)
            assert reply.text == text.upper()  # type: ignore[attr-defined]
        # Counted as "replied" (written, not confirmed) rather than "confirmed",
        # under one routing key label whatever the caller's reply-to address.
        assert published(exchange, "echo", "replied") == 3
        assert published(exchange, "echo", "confirmed") == 0
        assert reply_keys(exchange, "echo") == {"(reply)"}
    finally:
        stopped(echo, thread)
        client.close()


class ReplyThenWait(BaseAgent):
    """Answers at once, then holds the request until ``release`` is set."""

    def __init__(self, pool: ConnectionPool, names: Names, exchange: str, **options: Any) -> None:
        self.release = threading.Event()
        self.handled = 0
        super().__init__(
            pool, "holder", ["hold.request"], exchange, names.queue("holder"), **options
        )

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"hold.request": messages_pb2.MyRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.handled += 1
        self.publish_response(
            messages_pb2.MyResponse(text="early"), "hold.response", properties["correlation_id"]
        )
        assert self.release.wait(20)


def test_a_direct_reply_goes_out_before_the_handler_returns_and_the_ack_after(
    pool: ConnectionPool, names: Names
) -> None:
    """publish_response from the handler does not wait for the IO thread, but the
    request stays unacked until both the handler returned and the reply was sent."""
    agent = ReplyThenWait(pool, names, names.exchange)
    client = Collector(pool, names, names.exchange, {}, ["unused.key"])
    thread = running(agent)
    queue = names.queue("holder")
    try:
        reply = client.request(messages_pb2.MyRequest(text="x"), "hold.request", 20)
        assert reply.text == "early"  # type: ignore[attr-defined]
        assert unacked(queue) == 1, "acked before its handler returned"
        agent.release.set()
        wait_for(lambda: unacked(queue) == 0, what="the ack once the handler returned")
    finally:
        agent.release.set()
        stopped(agent, thread)
        client.close()
    assert agent.handled == 1


def test_a_reply_that_fails_to_send_fails_the_request_like_a_handler_error(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    """The handler no longer sees a direct reply's send error: the delivery does, so
    the request is retried (and answered) rather than acked unanswered."""
    agent = ReplyThenWait(pool, names, names.exchange, retry_delays=[0.2])
    agent.release.set()
    publisher = agent.agent.publisher
    real_send_reply = publisher.send_reply
    failures = [PublishTimeoutError("injected: the reply could not be sent")]

    async def send_reply_failing_once(outgoing: Any) -> str:
        if failures:
            raise failures.pop()
        return await real_send_reply(outgoing)

    publisher.send_reply = send_reply_failing_once  # type: ignore[method-assign]
    client = Collector(pool, names, names.exchange, {}, ["unused.key"])
    thread = running(agent)
    try:
        reply = client.request(messages_pb2.MyRequest(text="x"), "hold.request", 20)
        wait_for(lambda: unacked(names.queue("holder")) == 0, what="the retried request's ack")
    finally:
        stopped(agent, thread)
        client.close()
    assert reply.text == "early"  # type: ignore[attr-defined]
    assert agent.handled == 2, "the request whose reply failed was handled again"
    assert raw.depth(f"{names.queue('holder')}.dlq") == 0
