"""The flight recorder on RabbitMQ: what it writes, where, and that a handler never waits on it."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from google.protobuf.message import Message as ProtoMessage
from prometheus_client import REGISTRY

from messaging import ConnectionPool, EventPublisher, EventSubscriber
from messaging._portal import Portal
from messaging.config import RabbitMQConfig
from messaging.errors import TopologyMissingError
from messaging.generated import messages_pb2 as pb
from messaging.recorder import FlightRecorder, Record, RecorderSettings
from messaging.recorder.reader import read_records
from tests.conftest import BROKER, Names
from tests.integration.helpers import queue_arguments, wait_for


class Forwarder(EventSubscriber):
    """Handles a QueryRequest: fails on "bad", else publishes a DataRequest in reply to it."""

    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, **options: Any) -> None:
        super().__init__(
            connection_pool=pool,
            agent_name="forwarder",
            exchange_name=exchange,
            queue_name=queue,
            routing_keys=["query.#"],
            retry_delays=[],
            **options,
        )
        self.onward = EventPublisher(pool, agent_name="forwarder", exchange_name=exchange)
        self.handled: list[str] = []
        self.delay = 0.0

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return pb.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        if self.delay:
            time.sleep(self.delay)
        if message.query == "bad":
            raise ValueError("cannot answer bad, see amqp://guest:hunter2@db.internal/x")
        self.onward.publish(
            pb.DataRequest(symbol=message.query),
            "data.request",
            correlation_id=properties["correlation_id"],
            mandatory=False,  # nobody listens: only the record of it matters
        )
        self.handled.append(message.query)


def records_of(config: RabbitMQConfig, stream: str, cid: str | None = None) -> list[Record]:
    """The records of conversation ``cid``; none while the recorder has not written yet."""
    try:
        reading = Portal.get().call(read_records(config, stream, correlation_id=cid, idle=0.5))
    except TopologyMissingError:
        return []
    return reading.records


@pytest.fixture
def stream(names: Names) -> Iterator[str]:
    name = f"{names.prefix}.recorder"
    yield name
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    connection.channel().queue_delete(name)
    connection.close()


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    made = ConnectionPool(config)
    yield made
    made.close()


def attach(pool: ConnectionPool, stream: str, **settings: Any) -> FlightRecorder:
    recorder = FlightRecorder(pool, RecorderSettings(stream=stream, **settings))
    pool.use(recorder)
    return recorder


def run(subscriber: EventSubscriber) -> threading.Thread:
    thread = threading.Thread(target=subscriber.start_consuming, daemon=True)
    thread.start()
    wait_for(lambda: subscriber.is_consuming, what="the consumer")
    return thread


def stop(subscriber: EventSubscriber, thread: threading.Thread, recorder: FlightRecorder) -> None:
    subscriber.stop()
    thread.join(30)
    Portal.get().call(recorder.close())


def test_publishes_and_handled_deliveries_are_recorded_with_their_causes(
    pool: ConnectionPool, names: Names, stream: str, config: RabbitMQConfig
) -> None:
    recorder = attach(pool, stream)
    forwarder = Forwarder(pool, names.exchange, names.queue())
    thread = run(forwarder)
    asker = EventPublisher(pool, agent_name="asker", exchange_name=names.exchange)
    good = asker.publish(pb.QueryRequest(query="AAPL"), "query.price", correlation_id="conv-good")
    bad = asker.publish(pb.QueryRequest(query="bad"), "query.price", correlation_id="conv-bad")
    wait_for(lambda: forwarder.handled == ["AAPL"], what="the good query handled")
    wait_for(lambda: len(records_of(config, stream, "conv-bad")) == 2, what="the bad records")
    stop(forwarder, thread, recorder)

    conversation = records_of(config, stream, "conv-good")
    assert [(r.kind, r.agent, r.type) for r in conversation] == [
        ("publish", "asker", "chimera.v1.QueryRequest"),
        ("publish", "forwarder", "chimera.v1.DataRequest"),
        ("handle", "forwarder", "chimera.v1.QueryRequest"),
    ]
    sent, onward, handled = conversation
    assert sent.message_id == good == handled.message_id
    assert sent.routing_key == "query.price"
    assert sent.exchange == names.exchange
    assert onward.cause_id == good  # published while handling the question
    assert handled.outcome == "ok"
    assert handled.attempt == 1
    assert handled.duration_ms is not None
    assert handled.duration_ms >= 0
    assert handled.ts >= sent.ts
    assert handled.instance == sent.instance != ""
    assert sent.body is None  # bodies only when asked

    failed = records_of(config, stream, "conv-bad")[-1]
    assert (failed.kind, failed.outcome, failed.message_id) == ("handle", "error", bad)
    assert failed.error_type == "builtins.ValueError"
    assert failed.error is not None
    assert "hunter2" not in failed.error
    assert "cannot answer bad" in failed.error


def test_the_stream_is_declared_with_retention_by_age_and_size(
    pool: ConnectionPool, names: Names, stream: str
) -> None:
    recorder = attach(
        pool, stream, max_age_seconds=3600, max_bytes=5_000_000, segment_bytes=1_000_000
    )
    EventPublisher(pool, agent_name="asker", exchange_name=names.exchange).publish(
        pb.QueryRequest(query="x"), "nobody.listens", mandatory=False
    )
    Portal.get().call(recorder.flush())
    Portal.get().call(recorder.close())
    assert queue_arguments(stream) == {
        "x-queue-type": "stream",
        "x-max-age": "3600s",
        "x-max-length-bytes": 5_000_000,
        "x-stream-max-segment-size-bytes": 1_000_000,
    }


def test_defaults_keep_a_day_and_a_segment_small_enough_for_retention_to_act() -> None:
    arguments = RecorderSettings().stream_arguments()
    assert arguments["x-max-age"] == "86400s"
    # Retention drops whole segments: a segment is a small part of what is kept.
    assert arguments["x-stream-max-segment-size-bytes"] * 10 <= arguments["x-max-length-bytes"]


def test_bodies_only_for_the_agents_asked_capped_and_never_secret_headers(
    pool: ConnectionPool, names: Names, stream: str, config: RabbitMQConfig
) -> None:
    recorder = attach(pool, stream, bodies=("asker",), body_max_bytes=8)
    forwarder = Forwarder(pool, names.exchange, names.queue())
    thread = run(forwarder)
    asker = EventPublisher(pool, agent_name="asker", exchange_name=names.exchange)
    asker.publish(
        pb.QueryRequest(query="a long enough query"),
        "query.x",
        correlation_id="conv-body",
        headers={"x-tenant": "acme", "x-auth-token": "t0k", "Authorization": "Bearer b"},
    )
    wait_for(lambda: len(forwarder.handled) == 1, what="the query handled")
    stop(forwarder, thread, recorder)
    records = {(r.kind, r.agent): r for r in records_of(config, stream, "conv-body")}
    sent = records[("publish", "asker")]
    body = pb.QueryRequest(query="a long enough query").SerializeToString()
    assert sent.body is not None
    assert base64.b64decode(sent.body) == body[:8]
    assert sent.body_truncated is True
    assert sent.headers is not None
    assert sent.headers.get("x-tenant") == "acme"
    assert not {"x-auth-token", "Authorization"} & set(sent.headers)
    assert records[("handle", "forwarder")].body is None  # not asked for this agent


def dropped(reason_part: str = "") -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "chimera_recorder_records_dropped":
            for sample in metric.samples:
                if sample.name.endswith("_total") and reason_part in sample.labels["reason"]:
                    total += sample.value
    return total


def test_a_deleted_stream_neither_fails_nor_slows_a_handler_and_recording_resumes(
    pool: ConnectionPool,
    names: Names,
    stream: str,
    config: RabbitMQConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = attach(pool, stream, flush_interval=0.05)
    forwarder = Forwarder(pool, names.exchange, names.queue())
    thread = run(forwarder)
    asker = EventPublisher(pool, agent_name="asker", exchange_name=names.exchange)
    asker.publish(pb.QueryRequest(query="first"), "query.x", correlation_id="before")
    wait_for(lambda: forwarder.handled == ["first"], what="the first query")
    Portal.get().call(recorder.flush())
    lost_before = dropped()

    raw = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    raw.channel().queue_delete(stream)  # the outage: the stream is gone under the recorder
    raw.close()
    caplog.set_level(logging.WARNING, "messaging.recorder")
    started = time.monotonic()
    for n in range(50):
        asker.publish(pb.QueryRequest(query=f"during-{n}"), "query.x", correlation_id="during")
    wait_for(lambda: len(forwarder.handled) == 51, what="every query handled during the outage")
    elapsed = time.monotonic() - started
    Portal.get().call(recorder.flush())
    # The write into the missing stream came back unroutable: those records are counted lost.
    wait_for(lambda: dropped() > lost_before, what="the lost records counted")
    assert any("flight recorder lost" in r.getMessage() for r in caplog.records)
    # 50 confirmed publishes and handlers on this machine take well under this; a handler
    # waiting on a recorder write timeout (5 s) would not.
    assert elapsed < 4.0, f"handling slowed to {elapsed:.2f}s during the outage"

    asker.publish(pb.QueryRequest(query="after"), "query.x", correlation_id="after")
    wait_for(lambda: "after" in forwarder.handled, what="the query after the outage")
    wait_for(
        lambda: any(r.kind == "handle" for r in records_of(config, stream, "after")),
        what="recording to resume on a re-declared stream",
    )
    stop(forwarder, thread, recorder)


def test_recorder_is_off_unless_enabled(
    config: RabbitMQConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RECORDER__ENABLED", raising=False)
    plain = ConnectionPool(config)
    assert not any(isinstance(m, FlightRecorder) for m in plain.middlewares)
    plain.close()
    monkeypatch.setenv("RECORDER__ENABLED", "true")
    monkeypatch.setenv("RECORDER__STREAM", "chimera.recorder.never-written")
    recording = ConnectionPool(config)
    recorders = [m for m in recording.middlewares if isinstance(m, FlightRecorder)]
    assert len(recorders) == 1
    assert recorders[0].settings.stream == "chimera.recorder.never-written"
    recording.close()
