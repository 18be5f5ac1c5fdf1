"""Item 2, replay side: ``chimera-bus dlq replay`` sends a dead letter only where it was
recorded going when it died, never where the sender's own headers say."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pika
import pytest

from messaging import ConnectionPool
from messaging.config import RabbitMQConfig
from messaging.headers import ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY
from messaging.topology import dlx_name
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for
from tests.integration.test_cli import cli

KEY = "query.request"


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def test_replay_follows_x_death_not_a_senders_headers_and_refuses_a_letter_with_neither(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    # The queue with its DLX and DLQ, declared by a subscriber that then stops.
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=[KEY]).run_in_thread()
    sub.stop_and_join()
    # Where a forged route would lead: a queue bound to everything else on the exchange.
    trap = names.queue("trap")
    raw.channel.queue_declare(trap, durable=True)
    raw.channel.queue_bind(trap, exchange, "admin.#")

    # 1. Expires in the work queue: the broker dead-letters it, recording the real route in
    #    x-death; the sender's headers claim another one.
    raw.channel.basic_publish(
        exchange,
        KEY,
        query("expired").SerializeToString(),
        pika.BasicProperties(
            expiration="1",
            headers={ORIGINAL_EXCHANGE: exchange, ORIGINAL_ROUTING_KEY: "admin.purge"},
        ),
    )
    # 2. Written straight into the DLX with the bus's header names and no x-death.
    raw.channel.basic_publish(
        dlx_name(exchange),
        queue,
        query("planted").SerializeToString(),
        pika.BasicProperties(
            headers={ORIGINAL_EXCHANGE: "", ORIGINAL_ROUTING_KEY: trap},
            message_id="planted",
        ),
    )
    # 3. Written straight into the DLX with nothing recorded at all.
    raw.channel.basic_publish(
        dlx_name(exchange), queue, query("bare").SerializeToString(), pika.BasicProperties()
    )
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 3, what="three dead letters")

    listing = cli("dlq", "list", queue, "--json")
    assert listing.exit_code == 0, listing.output
    records = [json.loads(line) for line in listing.output.splitlines() if line.startswith("{")]
    routes = [(r["original_exchange"], r["original_routing_key"]) for r in records]
    assert sorted(routes, key=str) == sorted([(exchange, KEY), ("", trap), (None, None)], key=str)

    result = cli("dlq", "replay", queue, "--yes")
    assert "replayed 2 of 3" in result.output, result.output
    assert "where it came from" in result.output
    # The expired one went back to the work queue by its real key, not to admin.purge ...
    assert raw.depth(queue) == 1
    got = raw.get(queue)
    assert got is not None
    method, props, body = got
    assert method.routing_key == KEY  # type: ignore[attr-defined]
    assert body == query("expired").SerializeToString()
    assert props.headers[ORIGINAL_ROUTING_KEY] == KEY  # type: ignore[attr-defined]
    # ... the planted one where its bus-shaped headers said: a writer to the DLX can
    # still do that, which is why the README's vhost permissions keep other producers
    # out of the DLX and the DLQ ...
    assert raw.depth(trap) == 1
    # ... and the bare one was refused and kept.
    assert raw.depth(f"{queue}.dlq") == 1
    rest = raw.get(f"{queue}.dlq")
    assert rest is not None
    assert rest[2] == query("bare").SerializeToString()
