"""Quorum queues, single active consumer and declare=False, on the real broker (one node)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pika
import pytest

from messaging import (
    ConnectionPool,
    EventPublisher,
    TopologyMismatchError,
    TopologyMissingError,
)
from messaging.config import RabbitMQConfig
from messaging.errors import MIGRATION_RECIPE
from messaging.topology import DLQ_TTL_MS
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, queue_arguments, rabbitmqctl, wait_for


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def queue_types() -> dict[str, str]:
    out = rabbitmqctl("list_queues", "name", "type", "--quiet", "--no-table-headers")
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def get_unacked(raw: RawBroker, queue: str) -> tuple[Any, bytes]:
    """basic_get without ack, waiting: a quorum queue requeues asynchronously (Raft)."""
    got: list[tuple[Any, bytes]] = []

    def take() -> bool:
        method, _props, body = raw.channel.basic_get(queue, auto_ack=False)
        if method is not None:
            got.append((method, body))
        return bool(got)

    wait_for(take, what=f"a message in {queue}")
    return got[0]


def test_quorum_declares_work_dlq_and_retry_queues_as_quorum(
    pool: ConnectionPool, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    names.queues.add(f"{queue}.retry.1")
    sub = Recorder(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=["query.request"],
        queue_type="quorum",
        retry_delays=[0.5],
        max_redeliveries=4,
    )
    sub.run_in_thread()
    try:
        types = queue_types()
        assert types[queue] == "quorum"
        assert types[f"{queue}.dlq"] == "quorum"
        assert types[f"{queue}.retry.1"] == "quorum"
        work = queue_arguments(queue)
        assert work["x-queue-type"] == "quorum"
        assert work["x-delivery-limit"] == 4
        assert work["x-dead-letter-strategy"] == "at-least-once"
        assert work["x-overflow"] == "reject-publish"
        assert work["x-dead-letter-exchange"] == f"{exchange}.dlx"
        dlq = queue_arguments(f"{queue}.dlq")
        assert "x-delivery-limit" not in dlq  # reading the DLQ must not count as deliveries
        assert dlq["x-message-ttl"] == DLQ_TTL_MS
        retry = queue_arguments(f"{queue}.retry.1")
        assert retry["x-dead-letter-strategy"] == "at-least-once"
        assert retry["x-overflow"] == "reject-publish"
    finally:
        sub.stop_and_join()


def test_quorum_round_trip_and_retry_through_a_quorum_delay_queue(
    pool: ConnectionPool, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    names.queues.add(f"{queue}.retry.1")

    class FailsOnce(Recorder):
        failed: ClassVar[set[str]] = set()

        def handle_message(self, message: object, properties: dict[str, object]) -> None:
            text = getattr(message, "query", "")
            if text == "flaky" and text not in self.failed:
                self.failed.add(text)
                raise RuntimeError("first attempt fails")
            super().handle_message(message, properties)  # type: ignore[arg-type]

    sub = FailsOnce(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=["query.request"],
        queue_type="quorum",
        retry_delays=[0.3],
    )
    sub.run_in_thread()
    publisher = EventPublisher(connection_pool=pool, agent_name="asker", exchange_name=exchange)
    try:
        publisher.publish(query("steady"), routing_key="query.request")
        publisher.publish(query("flaky"), routing_key="query.request")
        wait_for(lambda: sorted(sub.texts()) == ["flaky", "steady"], what="both messages")
    finally:
        publisher.close()
        sub.stop_and_join()
    attempts = {getattr(m, "query", ""): p["attempt"] for m, p in sub.received}
    assert attempts == {"steady": 1, "flaky": 2}


def test_the_broker_counts_deliveries_and_dead_letters_past_the_limit(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    """x-delivery-limit: a message requeued more often than the limit goes to the DLQ,
    by the broker, with no copy made by the bus (quorum queues count for us)."""
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=["query.request"],
        queue_type="quorum",
        max_redeliveries=2,
    )
    sub.run_in_thread()  # declares the topology
    sub.stop_and_join()
    raw.publish(exchange, "query.request", query("poison").SerializeToString())
    # Three deliveries without an ack, like three consumers crashing while holding it.
    for _ in range(3):
        method, body = get_unacked(raw, queue)
        assert b"poison" in body
        raw.channel.basic_reject(method.delivery_tag, requeue=True)
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the broker to dead-letter it")
    dead = raw.get(f"{queue}.dlq")
    assert dead is not None
    _, props, body = dead
    assert b"poison" in body
    deaths = props.headers["x-death"]  # type: ignore[attr-defined]
    assert deaths[0]["reason"] == "delivery_limit"
    # A message redelivered under the limit: the bus hands it to the handler
    # once, without swapping it for a copy that counts (the broker counts).
    raw.publish(exchange, "query.request", query("survivor").SerializeToString())
    method, _body = get_unacked(raw, queue)
    raw.channel.basic_reject(method.delivery_tag, requeue=True)
    again = Recorder(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=["query.request"],
        queue_type="quorum",
        max_redeliveries=2,
    )
    again.run_in_thread()
    try:
        wait_for(lambda: again.texts() == ["survivor"], what="the survivor")
    finally:
        again.stop_and_join()
    survivor = again.received[0][1]
    assert survivor["redelivered"] is True
    assert survivor["headers"].get("x-delivery-count") == 1
    assert "x-chimera-redeliveries" not in survivor["headers"]
    assert raw.depth(queue) == 0


def test_queue_type_defaults_from_rabbitmq_queue_type(config: RabbitMQConfig, names: Names) -> None:
    quorum_pool = ConnectionPool(config.model_copy(update={"queue_type": "quorum"}))
    sub = Recorder(quorum_pool, exchange=names.exchange, queue=names.queue(), routing_keys=["a"])
    try:
        sub.run_in_thread()
        assert queue_types()[sub.queue_name] == "quorum"
    finally:
        sub.stop_and_join()
        quorum_pool.close()


def test_classic_queue_declared_as_quorum_points_to_the_migration_recipe(
    pool: ConnectionPool, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    classic = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["a"])
    classic.run_in_thread()
    classic.stop_and_join()
    quorum = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["a"], queue_type="quorum")
    with pytest.raises(TopologyMismatchError) as info:
        quorum.start_consuming()
    text = str(info.value)
    assert "classic" in text
    assert "quorum" in text
    assert MIGRATION_RECIPE in text
    assert queue_types()[queue] == "classic"


def test_single_active_consumer_lets_one_replica_take_messages(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    options: dict[str, Any] = {"queue_type": "quorum", "single_active_consumer": True}
    first = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["a"], **options)
    first.run_in_thread()
    other_pool = ConnectionPool(pool.config)
    second = Recorder(other_pool, exchange=exchange, queue=queue, routing_keys=["a"], **options)
    second.run_in_thread()
    publisher = EventPublisher(connection_pool=pool, agent_name="asker", exchange_name=exchange)
    try:
        assert queue_arguments(queue)["x-single-active-consumer"] is True
        for n in range(20):
            publisher.publish(query(f"m{n}"), routing_key="a")
        wait_for(lambda: len(first.received) + len(second.received) == 20, what="20 messages")
        takers = [r for r in (first, second) if r.received]
        assert len(takers) == 1, "both consumers took messages"
        assert takers[0].texts() == [f"m{n}" for n in range(20)]
    finally:
        publisher.close()
        first.stop_and_join()
        second.stop_and_join()
        other_pool.close()


def test_declare_false_checks_and_declares_nothing(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    passive = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["a"], declare=False)
    with pytest.raises(TopologyMissingError) as info:
        passive.start_consuming()
    text = str(info.value)
    assert f"queue {queue!r}" in text
    assert f"exchange {exchange!r}" in text
    assert f"queue '{queue}.dlq'" in text
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        raw.channel.queue_declare(queue, passive=True)


def test_declare_false_consumes_from_an_operator_declared_topology(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    # The operator's definitions: other arguments than the bus would choose (a length
    # limit), which declare=False must leave alone.
    channel = raw.channel
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.exchange_declare(f"{exchange}.dlx", "direct", durable=True)
    channel.queue_declare(queue, durable=True, arguments={"x-max-length": 1000})
    channel.queue_declare(f"{queue}.dlq", durable=True)
    channel.queue_bind(queue, exchange, "a")
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["a"], declare=False)
    sub.run_in_thread()
    publisher = EventPublisher(connection_pool=pool, agent_name="asker", exchange_name=exchange)
    try:
        publisher.publish(query("hello"), routing_key="a")
        wait_for(lambda: sub.texts() == ["hello"], what="the message")
    finally:
        publisher.close()
        sub.stop_and_join()
    assert queue_arguments(queue) == {"x-max-length": 1000}
