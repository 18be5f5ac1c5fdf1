"""Item 9: a bounded work queue, by subscriber option, with what overflow means for data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from messaging import (
    ConfigurationError,
    ConnectionPool,
    EventPublisher,
    PublishNackedError,
)
from messaging.config import RabbitMQConfig
from messaging.topology import dlx_name, queue_limit_arguments
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, queue_arguments, wait_for


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=1, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def _declare_only(pool: ConnectionPool, names: Names, **limits: Any) -> tuple[str, str]:
    """Start a subscriber (it declares the queue), then stop it so the queue fills up."""
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["k"], **limits)
    sub.run_in_thread()
    sub.stop_and_join()
    return exchange, queue


def test_reject_publish_nacks_the_publisher_and_keeps_what_is_queued(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = _declare_only(pool, names, max_length=3, overflow="reject-publish")
    assert queue_arguments(queue)["x-max-length"] == 3
    assert queue_arguments(queue)["x-overflow"] == "reject-publish"
    publisher = EventPublisher(pool, "p", exchange)
    try:
        for n in range(3):
            publisher.publish(query(f"m{n}"), "k")
        with pytest.raises(PublishNackedError):
            publisher.publish(query("one too many"), "k")
    finally:
        publisher.close()
    assert raw.depth(queue) == 3
    assert raw.depth(f"{queue}.dlq") == 0
    bodies = [raw.get(queue) for _ in range(3)]
    assert [b[2] for b in bodies if b] == [query(f"m{n}").SerializeToString() for n in range(3)]


def test_reject_publish_is_the_default_once_a_limit_is_set(
    pool: ConnectionPool, names: Names
) -> None:
    _, queue = _declare_only(pool, names, max_length_bytes=10_000)
    args = queue_arguments(queue)
    assert args["x-max-length-bytes"] == 10_000
    assert args["x-overflow"] == "reject-publish"


def test_drop_head_dead_letters_the_oldest_and_the_publisher_is_not_told(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = _declare_only(pool, names, max_length=2, overflow="drop-head")
    publisher = EventPublisher(pool, "p", exchange)
    try:
        for n in range(4):
            publisher.publish(query(f"m{n}"), "k")  # all confirmed
    finally:
        publisher.close()
    assert raw.depth(queue) == 2
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 2, what="the two oldest in the DLQ")
    oldest = raw.get(f"{queue}.dlq")
    assert oldest is not None
    assert oldest[2] == query("m0").SerializeToString()
    reason = oldest[1].headers["x-death"][0]["reason"]  # type: ignore[attr-defined]
    assert reason == "maxlen"


def test_a_queue_declared_in_advance_with_a_limit_is_accepted_when_the_options_match(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    raw.channel.queue_declare(
        queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": dlx_name(exchange),
            "x-dead-letter-routing-key": queue,
            "x-max-length": 100,
            "x-overflow": "reject-publish",
        },
    )
    sub = Recorder(
        pool, exchange=exchange, queue=queue, routing_keys=["k"], max_length=100
    ).run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        publisher.publish(query("fits"), "k")
        wait_for(lambda: sub.texts() == ["fits"], what="the message")
    finally:
        publisher.close()
        sub.stop_and_join()


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"max_length": 0}, "max_length must be an int >= 1"),
        ({"max_length": -5}, "max_length must be"),
        ({"max_length": True}, "max_length must be"),
        ({"max_length_bytes": 1.5}, "max_length_bytes must be"),
        ({"overflow": "reject-publish"}, "needs max_length or max_length_bytes"),
        ({"max_length": 5, "overflow": "drop-tail"}, "overflow must be one of"),
        ({"max_length": 5, "overflow": "reject-publish-dlx"}, "overflow must be one of"),
    ],
)
def test_bad_limits_fail_before_anything_is_declared(
    pool: ConnectionPool, names: Names, raw: RawBroker, limits: dict[str, Any], says: str
) -> None:
    queue = names.queue()
    with pytest.raises(ConfigurationError, match=says):
        Recorder(pool, exchange=names.exchange, queue=queue, routing_keys=["k"], **limits)
    with pytest.raises(ConfigurationError, match=says):
        queue_limit_arguments(**limits)


def test_quorum_queues_take_only_reject_publish() -> None:
    assert queue_limit_arguments(5, None, None, queue_type="quorum") == {
        "x-max-length": 5,
        "x-overflow": "reject-publish",
    }
    with pytest.raises(ConfigurationError, match="quorum queues here take only"):
        queue_limit_arguments(5, None, "drop-head", queue_type="quorum")
