"""The flight recorder on both transports: the same records, written to a stream queue."""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventPublisher, EventSubscriber
from messaging._portal import Portal
from messaging.aio import AsyncBaseAgent, AsyncConnectionPool
from messaging.errors import TopologyMissingError
from messaging.generated import messages_pb2 as pb
from messaging.recorder import FlightRecorder, Record, RecorderSettings
from messaging.recorder.reader import read_records
from tests.conformance.conftest import Target


class Picky(EventSubscriber):
    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return pb.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        if message.query == "no":
            raise LookupError("no such thing")


def records(target: Target, stream: str, cid: str) -> list[Record]:
    try:
        return (
            Portal.get()
            .call(read_records(target.config, stream, correlation_id=cid, idle=0.3))
            .records
        )
    except TopologyMissingError:
        return []


def test_handled_and_failed_deliveries_are_recorded_alike(target: Target) -> None:
    stream = target.queue("recorder")
    pool = ConnectionPool(target.config)
    recorder = FlightRecorder(pool, RecorderSettings(stream=stream, flush_interval=0.05))
    pool.use(recorder)
    exchange = target.exchange()
    agent = Picky(
        connection_pool=pool,
        agent_name="picky",
        exchange_name=exchange,
        queue_name=target.queue("picky"),
        routing_keys=["ask.#"],
        retry_delays=[],
    )
    target.start(agent)
    publisher = EventPublisher(pool, agent_name="asker", exchange_name=exchange)
    try:
        sent = publisher.publish(pb.QueryRequest(query="no"), "ask.it", correlation_id="c-1")
        target.wait_for(lambda: len(records(target, stream, "c-1")) == 2, what="two records")
        publish, handle = records(target, stream, "c-1")
        assert (publish.kind, publish.agent, publish.message_id) == ("publish", "asker", sent)
        assert (handle.kind, handle.agent, handle.outcome) == ("handle", "picky", "error")
        assert handle.error_type == "builtins.LookupError"
        assert handle.message_id == sent
        assert handle.routing_key == "ask.it"
    finally:
        target.stop(agent)
        Portal.get().call(recorder.close())
        pool.close()


class AsyncUpper(AsyncBaseAgent):
    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"upper.request": pb.QueryRequest}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        reply = pb.QueryResponse(answer=message.query.upper())
        await self.publish_response(reply, "upper.response", properties["correlation_id"])


def test_the_asyncio_api_is_recorded_and_written_when_the_pool_closes(target: Target) -> None:
    stream, exchange = target.queue("recorder"), target.exchange()
    queue = target.queue("upper")

    async def main() -> None:
        pool = AsyncConnectionPool(target.config)
        pool.use(FlightRecorder(pool, RecorderSettings(stream=stream, flush_interval=5.0)))
        upper = AsyncUpper(pool, "upper", ["upper.request"], exchange, queue)
        await upper.start()
        caller = AsyncBaseAgent(pool, "caller", [], exchange)
        try:
            reply = await caller.request(pb.QueryRequest(query="hi"), "upper.request", timeout=10)
            assert isinstance(reply, pb.QueryResponse)
        finally:
            await caller.stop()
            await upper.stop()
            await pool.close()  # well within the 5 s interval: closing writes the buffer

    asyncio.run(main())
    # Written as they end (a handle record after what its handler sent); read in time order.
    recorded = sorted(
        asyncio.run(read_records(target.config, stream, idle=0.3)).records, key=lambda r: r.ts
    )
    kinds = [(r.kind, r.agent) for r in recorded]
    assert kinds == [("publish", "caller"), ("handle", "upper"), ("publish", "upper")]
    request, handled, reply = recorded
    assert request.reply_to is not None
    assert handled.message_id == request.message_id
    assert handled.outcome == "ok"
    assert reply.cause_id == request.message_id  # the context var crossed the await
    assert reply.correlation_id == request.correlation_id
