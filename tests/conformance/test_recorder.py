"""The flight recorder on both transports: the same records, written to a stream queue."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventPublisher, EventSubscriber
from messaging._portal import Portal
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
