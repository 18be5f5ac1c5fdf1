"""The mandatory opt-out: events nobody listens to yet, per publisher and per publish."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from messaging import BaseAgent, ConnectionPool, EventPublisher, UnroutableMessageError
from messaging.aio import AsyncConnectionPool, AsyncEventPublisher
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.serialization import serialize
from messaging.transport import Properties
from tests.conftest import Names, RawBroker
from tests.integration.helpers import rabbitmqctl


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


def test_an_alternate_exchange_policy_keeps_what_nothing_else_routes(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    """The README's other way: a policy gives the events exchange an alternate exchange."""
    exchange = names.exchange
    unrouted = names.new_exchange("unrouted")
    kept = names.queue("unrouted")
    raw.channel.exchange_declare(unrouted, "fanout", durable=True)
    raw.channel.queue_declare(kept, durable=True)
    raw.channel.queue_bind(kept, unrouted)
    policy = f"{names.prefix}-unrouted"
    rabbitmqctl(
        "set_policy",
        policy,
        f"^{re.escape(exchange)}$",
        json.dumps({"alternate-exchange": unrouted}),
        "--apply-to",
        "exchanges",
    )
    try:
        with EventPublisher(pool, "pricer", exchange) as publisher:
            # The exchange is declared by the first publish; the policy applies at once.
            wait_for_policy = 0
            while True:
                try:
                    publisher.publish(event(), "prices.changed")  # mandatory, and no error
                    break
                except UnroutableMessageError:
                    wait_for_policy += 1
                    assert wait_for_policy < 50, "the alternate-exchange policy never applied"
                    time.sleep(0.1)
        assert raw.depth(kept) == 1
    finally:
        rabbitmqctl("clear_policy", policy)


class Announcer(BaseAgent):
    """A send-only agent publishing events nobody may listen to yet."""


def test_an_agent_built_not_mandatory_drops_unrouted_publishes_and_requests(
    pool: ConnectionPool, names: Names
) -> None:
    loose = Announcer(pool, "announcer", [], names.exchange, mandatory=False)
    strict = Announcer(pool, "strict_announcer", [], names.exchange)
    try:
        assert loose.publish(event(), "prices.changed")
        assert loose.publish_request(event(), "prices.changed")
        with pytest.raises(UnroutableMessageError):
            loose.publish(event(), "prices.changed", mandatory=True)
        with pytest.raises(UnroutableMessageError):
            strict.publish(event(), "prices.changed")
        assert strict.publish(event(), "prices.changed", mandatory=False)
    finally:
        loose.close()
        strict.close()
