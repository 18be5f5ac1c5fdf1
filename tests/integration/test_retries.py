"""Retries through broker-side delay queues, and dead letters that say why."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventPublisher, EventSubscriber
from messaging import headers as h
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from tests.conftest import Names, RawBroker
from tests.integration.helpers import query, queue_arguments, wait_for


class NotMyJobError(Exception):
    """A failure no retry can fix."""


class Flaky(EventSubscriber):
    """Fails 'twice' two times, 'always' every time, 'never-retry' permanently."""

    def __init__(self, pool: ConnectionPool, exchange: str, queue: str) -> None:
        self.attempts: dict[str, list[int]] = {}
        self.handled: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(
            pool,
            "flaky",
            exchange,
            queue,
            ["work.#"],
            retry_delays=(0.2, 0.4),
            permanent_errors=(NotMyJobError,),
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        text = message.query  # type: ignore[attr-defined]
        with self.lock:
            self.attempts.setdefault(text, []).append(properties["attempt"])
        if text == "twice" and properties["attempt"] <= 2:
            raise RuntimeError("not yet")
        if text == "always":
            raise RuntimeError("never works")
        if text == "never-retry":
            raise NotMyJobError("wrong agent")
        with self.lock:
            self.handled.append(properties)


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config)
    yield pool
    pool.close()


def test_retries_then_dead_letters_with_why_headers(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    names.queues.update({f"{queue}.retry.1", f"{queue}.retry.2"})
    sub = Flaky(pool, exchange, queue)
    thread = threading.Thread(target=sub.start_consuming, daemon=True)
    thread.start()
    wait_for(lambda: sub.is_consuming, what="the consumer")
    publisher = EventPublisher(pool, "sender", exchange)
    try:
        for text in ["twice", "always", "never-retry"]:
            publisher.publish(query(text, correlation_id=f"c-{text}"), f"work.{text}")
        raw.publish(exchange, "work.garbage", b"\xff\xfe", message_id="garbage")
        raw.publish(exchange, "work.json", b'{"query": "twice"}', content_type="application/json")
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 4, timeout=20, what="four dead letters")
        wait_for(lambda: len(sub.handled) == 1, what="the flaky message to succeed")
    finally:
        publisher.close()
        sub.stop()
        thread.join(20)

    assert sub.attempts["twice"] == [1, 2, 3]
    assert sub.handled[0]["routing_key"] == "work.twice", "the original key survives retries"
    assert sub.handled[0]["exchange"] == exchange
    assert sub.attempts["always"] == [1, 2, 3]
    assert sub.attempts["never-retry"] == [1], "a permanent error is not retried"

    dead: dict[str, dict[str, Any]] = {}
    while (got := raw.get(f"{queue}.dlq")) is not None:
        _, props, _ = got
        headers = props.headers  # type: ignore[attr-defined]
        dead[headers[h.ORIGINAL_ROUTING_KEY]] = headers
    assert set(dead) == {"work.always", "work.never-retry", "work.garbage", "work.json"}
    assert "application/json" in dead["work.json"][h.ERROR_MESSAGE]
    assert dead["work.json"][h.ATTEMPTS] == 1, "a wrong content type is not retried"
    always = dead["work.always"]
    assert always[h.ERROR_TYPE] == "builtins.RuntimeError"
    assert always[h.ERROR_MESSAGE] == "never works"
    assert always[h.FAILED_AGENT] == "flaky"
    assert always[h.ORIGINAL_EXCHANGE] == exchange
    assert always[h.ATTEMPTS] == 3
    assert dead["work.never-retry"][h.ATTEMPTS] == 1
    assert dead["work.never-retry"][h.ERROR_TYPE].endswith("NotMyJobError")
    assert dead["work.garbage"][h.ATTEMPTS] == 1
    assert dead["work.garbage"][h.ERROR_TYPE] == "messaging.errors.DecodeError"
    assert raw.depth(queue) == 0
    assert queue_arguments(f"{queue}.retry.2")["x-message-ttl"] == 400
