"""Streaming replies and cancellation (README "Conversations"), on both APIs and transports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY

from messaging import (
    BaseAgent,
    ConnectionPool,
    EventPublisher,
    RemoteError,
    RequestContext,
    RequestTimeoutError,
)
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.generated import messages_pb2 as pb
from messaging.headers import CANCEL_TYPE
from tests.conformance.conftest import Target


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


class Counter:
    """A streaming agent whose generator counts what it yielded and says when it stopped."""

    def __init__(self, pool: ConnectionPool, target: Target, exchange: str) -> None:
        self.yielded = 0
        self.stopped = threading.Event()
        self.queue = target.queue("count")
        self.agent = BaseAgent(pool, "counter", exchange_name=exchange, queue_name=self.queue)

        @self.agent.handler("count.request")
        def count(request: pb.QueryRequest, ctx: RequestContext) -> Iterator[pb.QueryResponse]:
            try:
                for n in range(int(request.query)):
                    if n == 3 and request.metadata.source_agent == "fail-at-3":
                        raise ArithmeticError("three is too many")
                    self.yielded += 1
                    yield pb.QueryResponse(answer=str(n))
            finally:
                self.stopped.set()

        target.start(self.agent)


def ask(count: int, how: str = "") -> pb.QueryRequest:
    request = pb.QueryRequest(query=str(count))
    request.metadata.source_agent = how
    return request


def test_a_stream_arrives_whole_and_in_order(target: Target, pool: ConnectionPool) -> None:
    exchange = target.exchange()
    Counter(pool, target, exchange)
    caller = EventPublisher(pool, "caller", exchange)
    got = [
        r.answer
        for r in caller.stream(ask(50), "count.request", 30, response_type=pb.QueryResponse)
    ]
    assert got == [str(n) for n in range(50)]
    # A plain request to a streaming handler gets its first reply.
    first = caller.request(ask(50), "count.request", 10, response_type=pb.QueryResponse)
    assert first.answer == "0"
    caller.close()


def test_a_slow_reader_keeps_the_responder_within_the_window(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    counter = Counter(pool, target, exchange)
    caller = EventPublisher(pool, "caller", exchange)
    window, read, ahead = 16, 0, 0
    for _ in caller.stream(ask(10_000), "count.request", 120, window=window):
        read += 1
        ahead = max(ahead, counter.yielded - read)
        time.sleep(0.001)
    assert read == 10_000
    print(f"most replies the responder was ahead of the reader: {ahead} (window {window})")
    assert ahead <= window
    caller.close()


def test_leaving_a_stream_early_stops_the_responder(target: Target, pool: ConnectionPool) -> None:
    exchange = target.exchange()
    counter = Counter(pool, target, exchange)
    caller = EventPublisher(pool, "caller", exchange)
    before = REGISTRY.get_sample_value(
        "chimera_requests_cancelled_total", {"agent": "counter", "queue": counter.queue}
    )
    for n, _ in enumerate(caller.stream(ask(1_000_000), "count.request", 60, window=8)):
        if n == 9:
            break
    assert counter.stopped.wait(5), "the responder's generator was not closed"
    assert counter.yielded <= 10 + 8
    after = REGISTRY.get_sample_value(
        "chimera_requests_cancelled_total", {"agent": "counter", "queue": counter.queue}
    )
    assert (after or 0) == (before or 0) + 1
    caller.close()


def test_a_stream_that_fails_raises_remote_error_after_its_replies(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    counter = Counter(pool, target, exchange)
    caller = EventPublisher(pool, "caller", exchange)
    got: list[str] = []

    def read_all() -> None:
        for reply in caller.stream(
            ask(10, "fail-at-3"), "count.request", 30, response_type=pb.QueryResponse
        ):
            got.append(reply.answer)

    with pytest.raises(RemoteError, match="three is too many") as raised:
        read_all()
    assert got == ["0", "1", "2"]
    assert raised.value.error_type == "builtins.ArithmeticError"
    target.wait_for(lambda: target.depth(f"{counter.queue}.dlq") == 1, what="the dead letter")
    caller.close()


def test_a_caller_that_gives_up_cancels_a_long_sync_handler(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    agent = BaseAgent(pool, "slow", exchange_name=exchange, queue_name=target.queue("slow"))
    noticed: list[float] = []

    @agent.handler("slow.request")
    def slow(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
        started = time.monotonic()
        while time.monotonic() - started < 10:
            if ctx.cancelled:
                noticed.append(time.monotonic())
                break
            time.sleep(0.01)
        return pb.QueryResponse(answer="too late")

    target.start(agent)
    caller = EventPublisher(pool, "caller", exchange)
    with pytest.raises(RequestTimeoutError):
        caller.request(pb.QueryRequest(query="x"), "slow.request", timeout=3)
    gave_up = time.monotonic()
    target.wait_for(lambda: bool(noticed), what="the handler to see the cancel")
    assert noticed[0] - gave_up < 1.0
    caller.close()


def test_a_cancel_from_anyone_but_the_caller_is_ignored(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    agent = BaseAgent(pool, "guarded", exchange_name=exchange, queue_name=target.queue("g"))
    started = threading.Event()
    release = threading.Event()
    outcome: list[bool] = []
    contexts: list[RequestContext] = []

    @agent.handler("guarded.request")
    def guarded(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
        contexts.append(ctx)
        started.set()
        release.wait(10)
        outcome.append(ctx.cancelled)
        return pb.QueryResponse(answer="done")

    target.start(agent)
    caller = EventPublisher(pool, "caller", exchange)
    answer: list[str] = []
    asking = threading.Thread(
        target=lambda: answer.append(
            caller.request(
                pb.QueryRequest(query="x"), "guarded.request", 20, response_type=pb.QueryResponse
            ).answer
        )
    )
    asking.start()
    assert started.wait(10)
    correlation_id = str(contexts[0].correlation_id)
    target.publish_raw(
        f"{exchange}.control",
        "guarded.request",
        b"",
        type=CANCEL_TYPE,
        correlation_id=correlation_id,
        reply_to="amq.rabbitmq.reply-to.forged",
    )
    time.sleep(0.3)
    release.set()
    asking.join(10)
    assert outcome == [False]
    assert answer == ["done"]
    caller.close()


def test_async_streams_and_cancellation(target: Target) -> None:
    exchange, queue = target.exchange(), target.queue("async")
    cancelled: list[float] = []

    async def main() -> tuple[list[str], float]:
        pool = AsyncConnectionPool(target.config)
        agent = AsyncBaseAgent(pool, "stream", exchange_name=exchange, queue_name=queue)

        @agent.handler("ticks.request")
        async def ticks(request: pb.QueryRequest) -> AsyncIterator[pb.QueryResponse]:
            for n in range(5):
                await asyncio.sleep(0)
                yield pb.QueryResponse(answer=f"tick {n}")

        @agent.handler("nap.request")
        async def nap(request: pb.QueryRequest) -> pb.QueryResponse:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(time.monotonic())
                raise
            return pb.QueryResponse(answer="rested")

        await agent.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        try:
            got = [
                r.answer
                async for r in caller.stream(
                    pb.QueryRequest(), "ticks.request", 10, response_type=pb.QueryResponse
                )
            ]
            with pytest.raises(RequestTimeoutError):
                await caller.request(pb.QueryRequest(), "nap.request", timeout=0.5)
            gave_up = time.monotonic()
            for _ in range(100):
                if cancelled:
                    break
                await asyncio.sleep(0.02)
        finally:
            await caller.stop()
            await agent.stop()
            await pool.close()
        return got, gave_up

    got, gave_up = asyncio.run(main())
    assert got == [f"tick {n}" for n in range(5)]
    assert cancelled, "the async handler was not cancelled"
    assert cancelled[0] - gave_up < 1.0


def test_cancelling_the_callers_task_cancels_the_handler(target: Target) -> None:
    exchange, queue = target.exchange(), target.queue("nap")
    cancelled: list[float] = []

    async def main() -> float:
        pool = AsyncConnectionPool(target.config)
        agent = AsyncBaseAgent(pool, "napper", exchange_name=exchange, queue_name=queue)
        started = asyncio.Event()

        @agent.handler("nap.request")
        async def nap(request: pb.QueryRequest) -> pb.QueryResponse:
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(time.monotonic())
                raise
            return pb.QueryResponse(answer="rested")

        await agent.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        try:
            asking = asyncio.ensure_future(
                caller.request(pb.QueryRequest(), "nap.request", timeout=30)
            )
            await asyncio.wait_for(started.wait(), 10)
            asking.cancel()  # the caller's own task, not a timeout
            with pytest.raises(asyncio.CancelledError):
                await asking
            gave_up = time.monotonic()
            for _ in range(100):
                if cancelled:
                    break
                await asyncio.sleep(0.02)
        finally:
            await caller.stop()
            await agent.stop()
            await pool.close()
        return gave_up

    gave_up = asyncio.run(main())
    assert cancelled, "the handler was not cancelled"
    assert cancelled[0] - gave_up < 1.0
