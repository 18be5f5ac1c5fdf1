"""Metrics, the health endpoint, log context and trace context, on the real broker."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from pydantic import SecretStr

from messaging import ConnectionPool, EventPublisher
from messaging.config import MonitoringConfig, RabbitMQConfig, Settings
from messaging.ops import logcontext, tracing
from messaging.ops.health import HealthServer, serve_from_config, stop_serving
from messaging.ops.logs import configure_logging, redact
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for

ROUTING_KEY = "query.request"


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    # A name of its own: connection metrics are labelled by it.
    config = config.model_copy(update={"connection_name": f"obs-{uuid.uuid4().hex[:8]}"})
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


@pytest.fixture
def server(pool: ConnectionPool) -> Iterator[HealthServer]:
    server = HealthServer(pool, host="127.0.0.1", port=0).start()
    yield server
    server.close()


@pytest.fixture
def subscriber(pool: ConnectionPool, names: Names) -> Iterator[Recorder]:
    sub = Recorder(
        pool,
        exchange=names.exchange,
        queue=names.queue(),
        routing_keys=[ROUTING_KEY],
        fail_on=["poison"],
    )
    sub.run_in_thread()
    yield sub
    if sub.thread is not None and sub.thread.is_alive():
        sub.stop_and_join()


@pytest.fixture
def publisher(pool: ConnectionPool, names: Names) -> Iterator[EventPublisher]:
    publisher = EventPublisher(pool, "obs-publisher", names.exchange)
    yield publisher
    publisher.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def get(url: str) -> tuple[int, str, bytes]:
    """Status, content type and body, also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


@dataclass
class Pretend:
    """A watched subscriber whose own flag says it consumes; the broker may disagree."""

    agent_name: str
    queue_name: str
    is_consuming: bool = True


# -- metrics ---------------------------------------------------------------


def test_metrics_follow_messages(
    pool: ConnectionPool, subscriber: Recorder, publisher: EventPublisher, raw: RawBroker
) -> None:
    agent, queue = subscriber.agent_name, subscriber.queue_name
    exchange = subscriber.exchange_name
    consumer = {"agent": agent, "queue": queue}
    confirmed = {
        "agent": "obs-publisher",
        "exchange": exchange,
        "routing_key": ROUTING_KEY,
        "outcome": "confirmed",
    }
    before = {
        "published": sample("chimera_messages_published_total", **confirmed),
        "consumed": sample("chimera_messages_consumed_total", **consumer),
        "acked": sample("chimera_messages_acked_total", **consumer),
        "errors": sample("chimera_handler_errors_total", **consumer, error_type="RuntimeError"),
        "dead": sample("chimera_messages_dead_lettered_total", **consumer),
        "duration": sample("chimera_handler_duration_seconds_count", **consumer),
    }

    n = 5
    for i in range(n):
        publisher.publish(query(f"fine {i}"), ROUTING_KEY)
    publisher.publish(query("poison"), ROUTING_KEY)
    wait_for(lambda: len(subscriber.received) == n, what="the good messages")
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")

    def delta(key: str, name: str, labels: dict[str, str]) -> float:
        return sample(name, **labels) - before[key]

    assert delta("published", "chimera_messages_published_total", confirmed) == n + 1
    assert delta("consumed", "chimera_messages_consumed_total", consumer) == n + 1
    assert delta("acked", "chimera_messages_acked_total", consumer) == n
    assert (
        delta(
            "errors",
            "chimera_handler_errors_total",
            {**consumer, "error_type": "RuntimeError"},
        )
        == 1
    )
    assert delta("dead", "chimera_messages_dead_lettered_total", consumer) == 1
    assert delta("duration", "chimera_handler_duration_seconds_count", consumer) == n + 1
    assert sample("chimera_publishes_in_flight", agent="obs-publisher") == 0
    for purpose in ("publish", "consume"):
        connection = f"{pool.config.connection_name}:{purpose}"
        assert sample("chimera_connection_up", connection=connection) == 1
        assert sample("chimera_connection_uptime_seconds", connection=connection) > 0


def test_dlq_gauge_reads_the_broker(
    server: HealthServer, subscriber: Recorder, publisher: EventPublisher, raw: RawBroker
) -> None:
    queue = subscriber.queue_name
    server.watch(subscriber)
    assert REGISTRY.get_sample_value("chimera_dlq_messages", {"queue": queue}) == 0

    publisher.publish(query("poison"), ROUTING_KEY)
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")
    # Cached for a few seconds, then read again from the broker.
    wait_for(
        lambda: REGISTRY.get_sample_value("chimera_dlq_messages", {"queue": queue}) == 1,
        what="the gauge to show the dead letter",
    )
    status, _, body = get(f"{server.url}/metrics")
    assert status == 200
    assert f'chimera_dlq_messages{{queue="{queue}"}} 1.0' in body.decode()

    server.unwatch(subscriber)
    assert REGISTRY.get_sample_value("chimera_dlq_messages", {"queue": queue}) is None


def test_dlq_gauge_skips_a_missing_queue_without_failing_the_scrape(
    server: HealthServer, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    missing = names.queue("never-declared")
    server.watch(Pretend("ghost", missing))
    with caplog.at_level(logging.WARNING, logger="messaging.metrics"):
        status, _, body = get(f"{server.url}/metrics")
    assert status == 200
    assert "chimera_dlq_messages" in body.decode()
    assert missing not in body.decode()
    assert any(missing in r.getMessage() for r in caplog.records)


# -- the HTTP endpoint -----------------------------------------------------


def test_endpoints_answer_and_readyz_follows_the_consumer(
    server: HealthServer, subscriber: Recorder
) -> None:
    status, content_type, body = get(f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert b"chimera_connection_up" in body

    status, _, body = get(f"{server.url}/healthz")
    assert (status, json.loads(body)["status"]) == (200, "alive")

    server.watch(subscriber)
    # The pool opens its publishing connection in the background (start()).
    wait_for(lambda: get(f"{server.url}/readyz")[0] == 200, what="/readyz to turn 200")
    report = json.loads(get(f"{server.url}/readyz")[2])
    assert report["status"] == "ready"
    assert report["subscribers"] == [
        {
            "agent": subscriber.agent_name,
            "queue": subscriber.queue_name,
            "consuming": True,
            "broker_consumers": 1,
        }
    ]

    subscriber.stop_and_join()
    wait_for(lambda: get(f"{server.url}/readyz")[0] == 503, what="/readyz to turn 503")
    report = json.loads(get(f"{server.url}/readyz")[2])
    assert report["status"] == "not ready"
    assert f"recorder is not consuming {subscriber.queue_name}" in report["problems"]

    status, _, _ = get(f"{server.url}/nowhere")
    assert status == 404


def test_readyz_asks_the_broker_not_just_the_flag(
    server: HealthServer, raw: RawBroker, names: Names
) -> None:
    orphan = names.queue("orphan")
    raw.channel.queue_declare(orphan, durable=True)
    server.watch(Pretend("liar", orphan))
    wait_for(lambda: server.pool.health().connected, what="the pool to connect")
    server._ready_cache = None

    status, _, body = get(f"{server.url}/readyz")
    report = json.loads(body)
    assert status == 503
    assert report["problems"] == [f"the broker counts no consumer on {orphan} (liar)"]
    assert report["subscribers"][0]["broker_consumers"] == 0

    # A missing queue is a problem too, and the probe's channel recovers from the 404.
    missing = names.queue("missing")
    server.watch(Pretend("gone", missing))
    server._ready_cache = None
    report = json.loads(get(f"{server.url}/readyz")[2])
    assert any(
        p.startswith(f"could not ask the broker about {missing}") for p in report["problems"]
    )
    assert server.probe.consumer_count(orphan) == 0


def test_serve_from_config_is_off_by_default_and_one_per_process(pool: ConnectionPool) -> None:
    assert serve_from_config(pool, Settings()) is None
    settings = Settings(monitoring=MonitoringConfig(http_port=0))
    try:
        first = serve_from_config(pool, settings)
        assert first is not None
        assert first.port != 0
        assert serve_from_config(pool, settings) is first
        assert get(f"{first.url}/healthz")[0] == 200
    finally:
        stop_serving()


# -- logs ------------------------------------------------------------------


class Chatty(Recorder):
    """Logs a line of its own for every message."""

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        logging.getLogger("tests.chatty").info("handling %s", getattr(message, "query", ""))
        super().handle_message(message, properties)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_handler_log_lines_carry_the_message_ids(
    json_logs: io.StringIO, pool: ConnectionPool, publisher: EventPublisher, names: Names
) -> None:
    sub = Chatty(pool, exchange=names.exchange, queue=names.queue(), routing_keys=[ROUTING_KEY])
    sub.run_in_thread()
    try:
        message_id = publisher.publish(query("hello"), ROUTING_KEY, correlation_id="corr-obs-1")
        wait_for(lambda: len(sub.received) == 1, what="the message")
    finally:
        sub.stop_and_join()

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    mine = [line for line in lines if line["logger"] == "tests.chatty"]
    assert len(mine) == 1
    assert mine[0]["message"] == "handling hello"
    assert mine[0]["level"] == "INFO"
    assert mine[0]["correlation_id"] == "corr-obs-1"
    assert mine[0]["message_id"] == message_id
    assert mine[0]["ts"].endswith("Z")
    # Outside a handler there is no message in hand.
    assert all(line["correlation_id"] is None for line in lines if line is not mine[0])


def test_json_lines_carry_exc_info_and_text_lines_the_ids() -> None:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "json", stream)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("tests.obs").exception("it failed")
        entry = json.loads(stream.getvalue().splitlines()[-1])
        assert entry["message"] == "it failed"
        assert "ValueError: boom" in entry["exc_info"]

        text = io.StringIO()
        handler = configure_logging("INFO", "text", text)  # replaces the JSON handler
        tokens = logcontext.bind({"correlation_id": "c-9", "message_id": "m-9"})
        try:
            logging.getLogger("tests.obs").info("in hand")
        finally:
            logcontext.unbind(tokens)
        assert text.getvalue().rstrip().endswith("in hand [correlation_id=c-9 message_id=m-9]")
        assert stream.getvalue().count("\n") == 1  # the old handler is gone
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_passwords_never_reach_the_log(fmt: str) -> None:
    secret = "s3cr3t-pa55"
    config = RabbitMQConfig(password=SecretStr(secret))
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("INFO", "json" if fmt == "json" else "text", stream)
    try:
        log = logging.getLogger("tests.obs")
        log.info("config %r", config)
        log.info("settings %s", Settings(rabbitmq=config))
        log.info("connecting to %s", config.nodes()[0].url())
        try:
            raise ConnectionError(f"cannot reach {config.nodes()[0].url()}")
        except ConnectionError:
            log.exception("failed")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    output = stream.getvalue()
    assert secret not in output
    assert "amqp://guest:******@localhost:5672/" in output
    assert redact("see amqps://u:p%40ss@h/v") == "see amqps://u:******@h/v"


# -- traces ----------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process; later tests reuse it
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable_tracing()
    yield exporter
    tracing.disable_tracing()
    exporter.shutdown()


def test_trace_context_survives_the_broker(
    spans: InMemorySpanExporter, subscriber: Recorder, publisher: EventPublisher
) -> None:
    tracer = trace.get_tracer("tests.observability")
    with tracer.start_as_current_span("workflow") as workflow:
        publisher.publish(query("traced"), ROUTING_KEY, correlation_id="corr-trace")
    wait_for(lambda: len(subscriber.received) == 1, what="the message")

    def consumer_span() -> ReadableSpan | None:
        found = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
        return found[0] if found else None

    wait_for(lambda: consumer_span() is not None, what="the consumer span")
    consumed = consumer_span()
    assert consumed is not None
    producer = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.PRODUCER)
    trace_id = workflow.get_span_context().trace_id

    assert producer.context is not None
    assert consumed.context is not None
    assert producer.parent is not None
    assert consumed.parent is not None
    assert producer.context.trace_id == trace_id
    assert producer.parent.span_id == workflow.get_span_context().span_id
    assert consumed.context.trace_id == trace_id
    assert consumed.parent.span_id == producer.context.span_id
    assert consumed.parent.is_remote
    assert consumed.attributes is not None
    assert consumed.attributes["messaging.message.conversation_id"] == "corr-trace"
    _, properties = subscriber.received[0]
    assert "traceparent" in properties["headers"]
