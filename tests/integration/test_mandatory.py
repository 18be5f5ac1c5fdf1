"""The mandatory opt-out: events nobody listens to yet, per publisher and per publish."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from messaging import ConnectionPool, EventPublisher, UnroutableMessageError
from messaging.aio import AsyncConnectionPool, AsyncEventPublisher
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.serialization import serialize
from messaging.transport import Properties
from tests.conftest import Names, RawBroker


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=2, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def event() -> messages_pb2.MyResponse:
    return messages_pb2.MyResponse(text="price changed")


def test_by_default_an_event_nobody_listens_to_raises(pool: ConnectionPool, names: Names) -> None:
    with EventPublisher(pool, "pricer", names.exchange) as publisher:
        with pytest.raises(UnroutableMessageError):
            publisher.publish(event(), "prices.changed")
        # Per publish, the opt-out: the broker confirms and drops it.
        assert publisher.publish(event(), "prices.changed", mandatory=False)


def test_a_publisher_built_not_mandatory_drops_unrouted_events_but_delivers_routed_ones(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange = names.exchange
    queue = names.queue("listener")
    with EventPublisher(pool, "pricer", exchange, mandatory=False) as publisher:
        publisher.publish(event(), "prices.changed")  # nobody bound yet: no error
        raw.channel.queue_declare(queue, durable=True)
        raw.channel.queue_bind(queue, exchange, "prices.#")
        publisher.publish(event(), "prices.changed")
        with pytest.raises(UnroutableMessageError):  # and opted back in for one publish
            publisher.publish(event(), "nobody.listens", mandatory=True)
    assert raw.depth(queue) == 1, "the routed event arrives; the one before the binding is gone"


async def test_async_opt_out_and_moves_stay_mandatory(config: RabbitMQConfig, names: Names) -> None:
    pool = AsyncConnectionPool(config)
    publisher = AsyncEventPublisher(pool, "pricer", names.exchange, mandatory=False)
    try:
        assert await publisher.publish(event(), "prices.changed")
        with pytest.raises(UnroutableMessageError):
            await publisher.publish(event(), "prices.changed", mandatory=True)
        # republish is how retries and dead-letter moves travel: always mandatory.
        with pytest.raises(UnroutableMessageError):
            await publisher.republish(
                serialize(event()),
                names.exchange,
                "prices.changed",
                Properties(message_id="m-1", delivery_mode=2),
            )
    finally:
        await publisher.close()
        await pool.close()
