"""Items 2 and 3: what a sender claims is not believed.

Reproduced with plain pika: ``x-chimera-*`` headers on a fresh message do not
move its routing key, exchange or attempt count, and a ``type`` that is not
the expected class's full name is dead-lettered instead of decoded as the
wrong class.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import pika
import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventPublisher
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.headers import (
    ATTEMPTS,
    ERROR_MESSAGE,
    ERROR_TYPE,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    REDELIVERIES,
)
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for

KEY = "query.request"
FORGED = {
    ORIGINAL_ROUTING_KEY: "admin.purge",
    ORIGINAL_EXCHANGE: "amq.direct",
    ATTEMPTS: 99,
    REDELIVERIES: 99,
    ERROR_TYPE: "forged",
}


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def _dead_letter(raw: RawBroker, queue: str) -> tuple[Any, bytes]:
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")
    got = raw.get(f"{queue}.dlq")
    assert got is not None
    return got[1], got[2]


def test_forged_bus_headers_do_not_move_the_routing_key_exchange_or_attempts(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(
        pool,
        exchange=exchange,
        queue=queue,
        routing_keys=[KEY],
        classes={KEY: messages_pb2.QueryRequest},  # "admin.purge" has no class
        retry_delays=[0.2],
        fail_on=["fail me"],
    ).run_in_thread()
    try:
        raw.publish(exchange, KEY, query("hello").SerializeToString(), headers=dict(FORGED))
        wait_for(lambda: sub.texts() == ["hello"], what="the message, by its real key")
        # A failing one is retried once (its forged attempt count is not believed),
        # then dead-lettered with the route it really had.
        raw.publish(exchange, KEY, query("fail me").SerializeToString(), headers=dict(FORGED))
        props, _ = _dead_letter(raw, queue)
    finally:
        sub.stop_and_join()

    _, seen = sub.received[0]
    assert seen["routing_key"] == KEY
    assert seen["exchange"] == exchange
    assert seen["attempt"] == 1
    assert not [k for k in seen["headers"] if str(k).startswith("x-chimera-")]
    headers = props.headers
    assert headers[ORIGINAL_ROUTING_KEY] == KEY
    assert headers[ORIGINAL_EXCHANGE] == exchange
    assert headers[ATTEMPTS] == 2  # the first try and its one retry
    assert headers[ERROR_TYPE] == "builtins.RuntimeError"
    assert REDELIVERIES not in headers


class _Accepting(Recorder):
    def accepted_types(self, message_class: type[ProtoMessage]) -> Collection[str]:
        return ["chimera.v2.QueryRequest"]


@pytest.mark.parametrize(
    ("properties", "body", "handled"),
    [
        # Issue 8's reproduction: a DataRequest decodes as QueryRequest(query="ZEC").
        (
            {"type": "chimera.v1.DataRequest"},
            messages_pb2.DataRequest(symbol="ZEC").SerializeToString(),
            False,
        ),
        ({"type": "chimera.v2.QueryRequest"}, query("v2").SerializeToString(), False),
        ({}, query("no type").SerializeToString(), True),
        ({"type": ""}, query("empty type").SerializeToString(), True),
        ({"type": "chimera.v1.QueryRequest"}, b"", True),  # all fields default, as named
        ({}, b"", False),  # neither type nor body: not taken as a class with fields
    ],
    ids=["wrong-type", "unlisted-v2", "no-type", "empty-type", "typed-empty-body", "bare-empty"],
)
def test_the_type_property_is_checked(
    pool: ConnectionPool,
    names: Names,
    raw: RawBroker,
    properties: dict[str, str],
    body: bytes,
    handled: bool,
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=[KEY]).run_in_thread()
    try:
        raw.channel.basic_publish(
            exchange, KEY, body, pika.BasicProperties(delivery_mode=2, **properties)
        )
        raw.publish(exchange, KEY, query("after").SerializeToString())
        wait_for(lambda: "after" in sub.texts(), what="the message behind it")
        if not handled:
            props, dead_body = _dead_letter(raw, queue)
    finally:
        sub.stop_and_join()
    assert len(sub.received) == (2 if handled else 1)
    if not handled:
        assert dead_body == body
        assert props.headers[ERROR_TYPE] == "messaging.errors.DecodeError"
        assert "type" in props.headers[ERROR_MESSAGE]


def test_a_subscriber_may_accept_more_type_names_for_a_class(
    pool: ConnectionPool, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = _Accepting(pool, exchange=exchange, queue=queue, routing_keys=[KEY]).run_in_thread()
    publisher = EventPublisher(pool, "p", exchange)
    try:
        raw.channel.basic_publish(
            exchange,
            KEY,
            query("from v2").SerializeToString(),
            pika.BasicProperties(type="chimera.v2.QueryRequest"),
        )
        publisher.publish(query("from v1"), KEY)
        raw.channel.basic_publish(
            exchange,
            KEY,
            query("v3").SerializeToString(),
            pika.BasicProperties(type="chimera.v3.QueryRequest"),
        )
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the v3 one dead-lettered")
        wait_for(lambda: sorted(sub.texts()) == ["from v1", "from v2"], what="v1 and v2")
    finally:
        publisher.close()
        sub.stop_and_join()
