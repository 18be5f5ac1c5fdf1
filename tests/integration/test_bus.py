"""The core bus, end to end, on the real broker."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pika
import pytest
from pydantic import SecretStr

from messaging import (
    AuthenticationFailedError,
    ConnectionFailedError,
    ConnectionPool,
    EventPublisher,
    InvalidMessageError,
    PublishError,
    TopologyMismatchError,
    UnroutableMessageError,
    VirtualHostError,
)
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.topology import DLQ_TTL_MS
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, queue_arguments, unacked, wait_for


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def test_round_trip_carries_message_and_properties(pool: ConnectionPool, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.request"])
    sub.run_in_thread()
    publisher = EventPublisher(connection_pool=pool, agent_name="asker", exchange_name=exchange)
    try:
        message_id = publisher.publish_with_reply(
            query("What is the ZEC price?"),
            routing_key="query.request",
            reply_queue="asker.replies",
            correlation_id="unique-id-123",
        )
        wait_for(lambda: len(sub.received) == 1, what="the message")
    finally:
        publisher.close()
        sub.stop_and_join()

    message, props = sub.received[0]
    assert isinstance(message, messages_pb2.QueryRequest)
    assert message.query == "What is the ZEC price?"
    assert props["correlation_id"] == "unique-id-123"
    assert props["reply_to"] == "asker.replies"
    assert props["message_id"] == message_id
    assert props["routing_key"] == "query.request"
    assert props["type"] == "chimera.v1.QueryRequest"
    assert props["content_type"] == "application/x-protobuf"
    assert props["app_id"] == "asker"
    assert props["redelivered"] is False
    assert props["timestamp"] is not None
    assert props["headers"] == {}


def test_topic_patterns_star_and_hash(pool: ConnectionPool, names: Names) -> None:
    exchange = names.exchange
    star = Recorder(pool, exchange=exchange, queue=names.queue("star"), routing_keys=["query.*"])
    hash_ = Recorder(
        pool, exchange=exchange, queue=names.queue("hash"), routing_keys=["#.response"]
    )
    star.run_in_thread()
    hash_.run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        for key in ["query.request", "query.response", "data.response", "a.b.response"]:
            publisher.publish(query(key), key)
        with pytest.raises(UnroutableMessageError):
            publisher.publish(query("query.deep.request"), "query.deep.request")
        wait_for(lambda: len(star.received) == 2 and len(hash_.received) == 3, what="routing")
    finally:
        publisher.close()
        star.stop_and_join()
        hash_.stop_and_join()
    assert sorted(star.texts()) == ["query.request", "query.response"]
    assert sorted(hash_.texts()) == ["a.b.response", "data.response", "query.response"]


def test_failures_go_to_the_dlq_and_consuming_goes_on(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=["query.#"],
        classes={"query.request": messages_pb2.QueryRequest},
        fail_on=["boom"],
    )
    sub.run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        publisher.publish(query("boom", correlation_id="c-boom"), "query.request")
        raw.publish(exchange, "query.request", b"\xff\xff not protobuf", correlation_id="c-bad")
        publisher.publish(query("nobody maps me"), "query.unmapped")
        publisher.publish(query("fine"), "query.request")
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 3, what="three dead letters")
        wait_for(lambda: sub.texts() == ["fine"], what="the good message")
    finally:
        publisher.close()
        sub.stop_and_join()

    dead = [raw.get(f"{queue}.dlq") for _ in range(3)]
    correlation_ids = {d[1].correlation_id for d in dead if d is not None}  # type: ignore[attr-defined]
    assert {"c-boom", "c-bad"} <= correlation_ids
    assert raw.depth(queue) == 0
    args = queue_arguments(f"{queue}.dlq")
    assert args["x-message-ttl"] == DLQ_TTL_MS == 86_400_000
    work_args = queue_arguments(queue)
    assert work_args["x-dead-letter-exchange"] == f"{exchange}.dlx"


def test_prefetch_is_honoured(pool: ConnectionPool, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=["k"],
        prefetch_count=3,
        handler_delay=0.5,
    )
    sub.run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        for i in range(10):
            publisher.publish(query(str(i)), "k")
        seen = [unacked(queue) for _ in range(5)]
        wait_for(lambda: len(sub.received) == 10, timeout=30, what="all ten")
    finally:
        publisher.close()
        sub.stop_and_join()
    assert max(seen) <= 3
    assert 3 in seen
    assert sub.texts() == [str(i) for i in range(10)], "one worker handles them in order"


def test_unroutable_publish_raises(pool: ConnectionPool, names: Names) -> None:
    publisher = EventPublisher(pool, "p", names.exchange)
    try:
        with pytest.raises(UnroutableMessageError, match="no queue is bound"):
            publisher.publish(query("lost?"), "nobody.listens")
    finally:
        publisher.close()


def test_bad_input_is_refused_before_sending(pool: ConnectionPool, names: Names) -> None:
    publisher = EventPublisher(pool, "p", names.exchange)
    try:
        with pytest.raises(InvalidMessageError, match="protobuf"):
            publisher.publish({"query": "x"}, "k")  # type: ignore[arg-type]
        with pytest.raises(InvalidMessageError):
            publisher.publish(query("x"), "")
    finally:
        publisher.close()


def test_oversized_message_is_refused_and_nothing_is_sent(
    config: RabbitMQConfig, names: Names, raw: RawBroker
) -> None:
    small = config.model_copy(update={"max_message_bytes": 1000})
    pool = ConnectionPool(small)
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["k"])
    sub.run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        with pytest.raises(InvalidMessageError, match="RABBITMQ__MAX_MESSAGE_BYTES"):
            publisher.publish(query("x" * 2000), "k")
        publisher.publish(query("small"), "k")
        wait_for(lambda: sub.texts() == ["small"], what="the small message")
    finally:
        publisher.close()
        sub.stop_and_join()
        pool.close()
    assert raw.depth(queue) == 0
    assert raw.depth(f"{queue}.dlq") == 0


def test_wrong_password_fails_at_once(config: RabbitMQConfig) -> None:
    bad = config.model_copy(update={"password": SecretStr("wrong-password")})
    pool = ConnectionPool(bad, max_retries=5, initial_retry_delay=30.0, max_retry_delay=60.0)
    started = time.monotonic()
    with pytest.raises(AuthenticationFailedError, match="RABBITMQ__PASSWORD") as info:
        pool.connect()
    assert time.monotonic() - started < 20, "an auth failure must not be retried"
    assert "wrong-password" not in str(info.value)
    pool.close()


def test_unknown_vhost_fails_at_once(config: RabbitMQConfig) -> None:
    bad = config.model_copy(update={"vhost": f"nope-{uuid.uuid4().hex[:6]}"})
    pool = ConnectionPool(bad, max_retries=5, initial_retry_delay=30.0, max_retry_delay=60.0)
    started = time.monotonic()
    with pytest.raises(VirtualHostError, match="RABBITMQ__VHOST"):
        pool.connect()
    assert time.monotonic() - started < 20, "an unknown vhost must not be retried"
    pool.close()


def test_closed_port_backs_off_then_gives_up(config: RabbitMQConfig) -> None:
    closed = config.model_copy(update={"port": 1})
    pool = ConnectionPool(closed, max_retries=3, initial_retry_delay=0.1, max_retry_delay=0.4)
    with pytest.raises(ConnectionFailedError, match="gave up after 4 attempts"):
        pool.connect()
    pool.close()


def test_existing_queue_with_other_arguments_is_a_clear_error(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.new_exchange("fresh"), names.queue()
    raw.channel.queue_declare(queue, durable=True, arguments={"x-max-length": 10})
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["k"])
    with pytest.raises(TopologyMismatchError) as info:
        sub.start_consuming()
    error = info.value
    assert error.name == queue
    assert "x-dead-letter-exchange" in str(error) or error.differences
    assert "delete" in str(error)
    # Nothing half-declared: the exchange this attempt created is gone again.
    with pytest.raises(Exception, match="NOT_FOUND"):
        raw.channel.exchange_declare(exchange, passive=True)


def exchange_exists(name: str) -> bool:
    """A passive declare on a connection of its own (a 404 closes the channel)."""
    checker = RawBroker()
    try:
        checker.channel.exchange_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        checker.close()
    return True


def test_a_channel_the_broker_closed_is_replaced_with_its_topology(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    """A channel error (here: the exchange deleted behind the publisher's back) costs
    that one publish, with a clear error; the next publish goes out on a new channel
    that re-declared the exchange."""
    exchange, queue = names.exchange, names.queue()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        with pytest.raises(UnroutableMessageError):
            publisher.publish(query("declares the exchange"), "k")
        raw.channel.exchange_delete(exchange)
        with pytest.raises(PublishError, match="does not exist"):
            publisher.publish(query("hits the 404"), "k")
        # The new channel re-declares the exchange in the background; wait for it
        # rather than race it (binding first fails with NOT_FOUND).
        wait_for(lambda: exchange_exists(exchange), what="the exchange declared again")
        raw.channel.queue_declare(queue, durable=True)
        raw.channel.queue_bind(queue, exchange, "k")
        publisher.publish(query("after"), "k")
        wait_for(lambda: raw.depth(queue) == 1, what="the message on the new channel")
    finally:
        publisher.close()


def test_a_subscriber_whose_queue_is_deleted_declares_it_again_and_goes_on(
    pool: ConnectionPool, names: Names, raw: RawBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Users of other libraries report queues left with no consumer and nothing noticing."""
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["k"])
    sub.run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        assert sub.broker_consumer_count() == 1
        with caplog.at_level(logging.ERROR, logger="messaging.channel"):
            raw.channel.queue_delete(queue)  # the broker cancels the consumer
            wait_for(
                lambda: "cancelled the consumer" in caplog.text, what="the cancel to be noticed"
            )
        wait_for(
            lambda: sub.is_consuming and sub.broker_consumer_count() == 1,
            what="the queue declared and consumed again",
        )
        assert queue_arguments(queue)["x-dead-letter-exchange"] == f"{exchange}.dlx"
        publisher.publish(query("after"), "k")
        wait_for(lambda: sub.texts() == ["after"], what="a message on the re-declared queue")
    finally:
        publisher.close()
        sub.stop_and_join()
