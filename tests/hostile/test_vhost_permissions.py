"""Item 2's real boundary: other producers get write permission on the events exchange only.

Then they cannot publish into the DLX (so nothing lands in a DLQ that the bus
did not put there) nor through the default exchange straight into a work,
delay or dead-letter queue (the bus's own retry path, whose x-chimera-*
headers it believes). The README's "Who may write where" gives these
permissions; this checks them on the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest

from messaging import ConnectionPool
from messaging.config import RabbitMQConfig
from messaging.topology import dlx_name
from tests.conftest import BROKER, Names, RawBroker
from tests.integration.helpers import Recorder, query, rabbitmqctl, wait_for


@pytest.fixture
def producer_only(names: Names) -> Iterator[tuple[str, str]]:
    """A user allowed to write to the events exchange and nothing else."""
    user, password = f"other-team-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmqctl("add_user", user, password)
    try:
        exchange = names.exchange
        only_events = f"^{exchange.replace('.', '[.]')}$"
        rabbitmqctl("set_permissions", "-p", "/", user, "^$", only_events, "^$")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


def _refused(user: str, password: str, exchange: str, routing_key: str) -> bool:
    """True when the broker refuses the publish with ACCESS_REFUSED (403)."""
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(*BROKER, credentials=pika.PlainCredentials(user, password))
    )
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, query("x").SerializeToString())
        return False
    except pika.exceptions.ChannelClosedByBroker as closed:
        return bool(closed.reply_code == 403)
    finally:
        if connection.is_open:
            connection.close()


def test_a_producer_with_the_documented_permissions_reaches_only_the_events_exchange(
    producer_only: tuple[str, str], names: Names, raw: RawBroker, config: RabbitMQConfig
) -> None:
    user, password = producer_only
    exchange, queue = names.exchange, names.queue()
    names.queues.add(f"{queue}.retry.1")
    pool = ConnectionPool(config)
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["k"], retry_delays=[5])
    sub.run_in_thread()
    try:
        assert not _refused(user, password, exchange, "k")
        wait_for(lambda: sub.texts() == ["x"], what="the allowed publish")
        assert _refused(user, password, dlx_name(exchange), queue)  # into the DLQ
        assert _refused(user, password, "", queue)  # straight into the work queue
        assert _refused(user, password, "", f"{queue}.retry.1")  # into a delay queue
        assert _refused(user, password, "", f"{queue}.dlq")  # into the DLQ by name
    finally:
        sub.stop_and_join()
        pool.close()
    assert raw.depth(f"{queue}.dlq") == 0
