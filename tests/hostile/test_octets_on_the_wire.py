"""Item 1: properties and header keys that are not UTF-8, sent by a raw client.

Reproduced with plain pika as another team's client would send them: the
bus must dead-letter each such message (saying why, with the sender's
octets) and go on consuming, without reconnecting in a loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest

from messaging import ConnectionPool
from messaging.config import RabbitMQConfig
from messaging.headers import ERROR_MESSAGE, ERROR_TYPE
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for

BAD = b"\xff\xfe\xc3("  # not UTF-8 in any position


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


CASES: dict[str, dict[str, Any]] = {
    "message_id": {"message_id": BAD},
    "type": {"type": BAD},
    "correlation_id": {"correlation_id": BAD},
    "header_key": {"headers": {BAD: "v"}},
    "nested_header_key": {"headers": {"outer": {BAD: 1}}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_property_that_is_not_utf8_is_dead_lettered_and_the_queue_moves(
    case: str, pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.request"])
    sub.run_in_thread()
    body = query("bad one").SerializeToString()
    try:
        raw.channel.basic_publish(
            exchange,
            "query.request",
            body,
            pika.BasicProperties(delivery_mode=2, **CASES[case]),
        )
        raw.publish(exchange, "query.request", query("good one").SerializeToString())
        wait_for(lambda: sub.texts() == ["good one"], what="the good message behind the bad one")
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the bad one in the DLQ")
        reconnects = pool.health().consuming.reconnects
    finally:
        sub.stop_and_join()

    assert reconnects == 0
    got = raw.get(f"{queue}.dlq")
    assert got is not None
    _, props, dead_body = got
    assert dead_body == body
    headers = props.headers  # type: ignore[attr-defined]
    assert headers[ERROR_TYPE].endswith("DecodeError")
    assert "not UTF-8" in headers[ERROR_MESSAGE]
    # The sender's octets travel on unchanged in the dead letter.
    if case == "header_key":
        assert headers[BAD] == "v"
    elif case == "nested_header_key":
        assert headers["outer"] == {BAD: 1}
    else:
        pika_name = {"type": "type"}.get(case, case)
        assert getattr(props, pika_name) == BAD
