"""Conversations beyond one request and one reply: typed replies and scatter-gather,
on both APIs and both transports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool, DecodeError, EventPublisher, RemoteError
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
