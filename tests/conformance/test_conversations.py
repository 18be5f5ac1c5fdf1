"""Conversations beyond one request and one reply: typed replies and scatter-gather,
on both APIs and both transports."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from prometheus_client import REGISTRY

from messaging import (
    BaseAgent,
    ConnectionPool,
    DecodeError,
    EventPublisher,
    RemoteError,
    RequestContext,
    RequestTimeoutError,
)
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.generated import messages_pb2 as pb
from tests.conformance.conftest import Target


class Voter(BaseAgent):
    """Answers ``poll.*`` with its own name; 'mute' never answers, 'broken' raises."""

    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, name: str) -> None:
        self.name = name
        self.asked = threading.Event()
        super().__init__(pool, name, ["poll.#"], exchange, queue)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"poll.#": pb.QueryRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        self.asked.set()
        if self.name.startswith("mute"):
            return
        if self.name.startswith("broken"):
            raise LookupError("no opinion")
        answer = pb.QueryResponse(answer=f"{self.name} votes yes")
        self.publish_response(answer, "poll.answer", properties["correlation_id"])


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


def test_request_is_typed_by_its_response_type(target: Target, pool: ConnectionPool) -> None:
    exchange = target.exchange()
    target.start(Voter(pool, exchange, target.queue("a"), "alice"))
    caller = EventPublisher(pool, "caller", exchange)
    reply = caller.request(pb.QueryRequest(query="?"), "poll.x", 10, response_type=pb.QueryResponse)
    assert reply.answer == "alice votes yes"  # typed: no isinstance needed
    with pytest.raises(DecodeError, match=r"not the chimera\.v1\.DataResponse asked for"):
        caller.request(pb.QueryRequest(query="?"), "poll.x", 10, response_type=pb.DataResponse)
    caller.close()


def test_gather_returns_the_replies_that_came_by_the_deadline_and_who_sent_them(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    voters = [
        Voter(pool, exchange, target.queue(name), name) for name in ("alice", "bob", "mute-carol")
    ]
    for voter in voters:
        target.start(voter)
    caller = EventPublisher(pool, "caller", exchange)
    started = time.monotonic()
    gathered = caller.gather(pb.QueryRequest(query="yes?"), "poll.vote", timeout=1.5)
    elapsed = time.monotonic() - started
    assert sorted(gathered.agents) == ["alice", "bob"]
    answers = sorted(r.answer for r in gathered.replies if isinstance(r, pb.QueryResponse))
    assert answers == ["alice votes yes", "bob votes yes"]
    assert gathered.errors == []
    assert voters[2].asked.is_set()  # asked, and never answered
    assert 1.4 <= elapsed < 5
    # max_replies: back as soon as that many came, long before the deadline.
    started = time.monotonic()
    first = caller.gather(pb.QueryRequest(query="yes?"), "poll.vote", timeout=30, max_replies=1)
    assert len(first.answers) == 1
    assert time.monotonic() - started < 10
    caller.close()


def test_gather_reports_an_agent_that_failed(target: Target, pool: ConnectionPool) -> None:
    exchange = target.exchange()
    target.start(Voter(pool, exchange, target.queue("a"), "alice"))
    target.start(Voter(pool, exchange, target.queue("b"), "broken-bob"))
    caller = EventPublisher(pool, "caller", exchange)
    gathered = caller.gather(pb.QueryRequest(query="?"), "poll.vote", timeout=30, max_replies=2)
    assert sorted(gathered.agents) == ["alice", "broken-bob"]
    (error,) = gathered.errors
    assert isinstance(error, RemoteError)
    assert error.agent == "broken-bob"
    assert error.error_type == "builtins.LookupError"
    caller.close()


class AsyncVoter(AsyncBaseAgent):
    def __init__(self, pool: AsyncConnectionPool, exchange: str, queue: str, name: str) -> None:
        super().__init__(pool, name, ["poll.#"], exchange, queue)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"poll.#": pb.QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        if self.agent_name == "mute":
            return
        answer = pb.QueryResponse(answer=f"{self.agent_name} votes yes")
        await self.publish_response(answer, "poll.answer", properties["correlation_id"])


def test_gather_and_typed_request_on_the_asyncio_api(target: Target) -> None:
    exchange = target.exchange()
    queues = {name: target.queue(name) for name in ("ann", "ben", "mute")}

    async def main() -> tuple[list[str], str]:
        pool = AsyncConnectionPool(target.config)
        voters = [AsyncVoter(pool, exchange, queue, name) for name, queue in queues.items()]
        for voter in voters:
            await voter.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        try:
            gathered = await caller.gather(pb.QueryRequest(), "poll.vote", timeout=1.0)
            reply = await caller.request(
                pb.QueryRequest(), "poll.one", 10, response_type=pb.QueryResponse
            )
        finally:
            await caller.stop()
            for voter in voters:
                await voter.stop()
            await pool.close()
        return sorted(gathered.agents), reply.answer

    agents, answer = asyncio.run(main())
    assert agents == ["ann", "ben"]
    assert answer.endswith("votes yes")


# -- deadlines -----------------------------------------------------------------------------


def expired_count(agent: str, queue: str) -> float:
    value = REGISTRY.get_sample_value(
        "chimera_requests_expired_total", {"agent": agent, "queue": queue}
    )
    return value or 0.0


def test_a_request_that_reaches_a_busy_agent_past_its_deadline_is_not_handled(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue("busy")
    # prefetch 5: the late request waits in the agent's hands, not in the queue (where the
    # broker itself would expire it: README "Deadlines").
    agent = BaseAgent(pool, "busy", exchange_name=exchange, queue_name=queue, prefetch_count=5)
    handled: list[str] = []
    left: list[float | None] = []

    @agent.handler("work.request")
    def work(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
        left.append(ctx.time_left())
        if request.query == "busy":
            time.sleep(0.5)
        handled.append(request.query)
        return pb.QueryResponse(answer="done")

    target.start(agent)
    caller = EventPublisher(pool, "caller", exchange)
    before = expired_count("busy", queue)
    busy = threading.Thread(
        target=lambda: caller.request(pb.QueryRequest(query="busy"), "work.request", timeout=10)
    )
    busy.start()
    target.wait_for(lambda: bool(left), what="the busy request to start")
    with pytest.raises(RequestTimeoutError):
        caller.request(pb.QueryRequest(query="late"), "work.request", timeout=0.05)
    busy.join(10)
    target.wait_for(lambda: expired_count("busy", queue) == before + 1, what="the count")
    assert handled == ["busy"]
    assert left[0] is not None
    assert 0 < left[0] <= 10
    assert target.depth(queue) == 0
    assert target.depth(f"{queue}.dlq") == 0  # acked, not a failure
    caller.close()


def test_a_request_made_while_handling_one_inherits_the_time_left(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    relay = BaseAgent(pool, "relay", exchange_name=exchange, queue_name=target.queue("relay"))
    target.start(Voter(pool, exchange, target.queue("mute"), "mute-dan"))
    waited: list[float] = []

    @relay.handler("relay.request")
    def forward(request: pb.QueryRequest) -> pb.QueryResponse:
        started = time.monotonic()
        with contextlib.suppress(RequestTimeoutError):
            relay.request(request, "poll.forwarded", timeout=30)  # nobody answers
        waited.append(time.monotonic() - started)
        return pb.QueryResponse(answer="gave up")

    target.start(relay)
    caller = EventPublisher(pool, "caller", exchange)
    with pytest.raises(RequestTimeoutError):
        caller.request(pb.QueryRequest(query="x"), "relay.request", timeout=1.0)
    target.wait_for(lambda: bool(waited), what="the relay's own request to give up")
    assert waited[0] < 5  # the caller's 1 s, not its own 30 s
    caller.close()


def test_a_deadline_header_that_is_not_a_number_is_ignored(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    agent = BaseAgent(pool, "lenient", exchange_name=exchange, queue_name=queue)
    seen: list[float | None] = []

    @agent.handler("work.#")
    def work(request: pb.QueryRequest, ctx: RequestContext) -> None:
        seen.append(ctx.deadline)

    target.start(agent)
    publisher = EventPublisher(pool, "foreign", exchange)
    publisher.publish(
        pb.QueryRequest(query="x"), "work.x", headers={"x-conversation-deadline": "soon"}
    )
    target.wait_for(lambda: seen == [None], what="the message handled without a deadline")
    publisher.close()
