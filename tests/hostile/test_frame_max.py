"""Item 4: a dead-letter copy never outgrows the negotiated frame_max.

A raw client sends a message whose headers nearly fill a frame. The bus's copy
adds its x-chimera-* headers: it must trim what it adds (the error message,
never the sender's headers) or fall back to a broker-side reject, and never
loop on FRAME_ERROR reconnects.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from messaging import ConnectionPool, EventPublisher, InvalidMessageError
from messaging.config import RabbitMQConfig
from messaging.headers import ERROR_MESSAGE, ERROR_TYPE
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for

FRAME_MAX = 131072  # RabbitMQ's default, which both clients negotiate here


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


class _LongWinded(Recorder):
    """Fails with a long error message: the part of the copy the bus may trim."""

    def handle_message(self, message: object, properties: dict[str, object]) -> None:
        raise RuntimeError("x" * 2000)


@pytest.mark.parametrize(
    ("room", "outcome"),
    [
        (600, "trimmed"),  # room for the bus's headers once the error message is cut
        (60, "rejected"),  # no room even for the bus's own names: the broker dead-letters it
    ],
)
def test_a_copy_that_would_outgrow_frame_max_is_trimmed_or_rejected_without_a_storm(
    pool: ConnectionPool, names: Names, raw: RawBroker, room: int, outcome: str
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = _LongWinded(pool, exchange=exchange, queue=queue, routing_keys=["k"]).run_in_thread()
    # Fill the content header to ``room`` octets short of the frame limit.
    body = query("big headers").SerializeToString()
    base = 8 + 14 + 1 + 2 + 4  # frame, class/weight/size, flags, delivery mode, table length
    filler = FRAME_MAX - room - base - len("filler") - 1 - 1 - 4
    try:
        raw.publish(exchange, "k", body, headers={"filler": "f" * filler})
        raw.publish(exchange, "k", query("next").SerializeToString())
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 2, what="both in the DLQ")
        reconnects = pool.health().publishing.reconnects + pool.health().consuming.reconnects
    finally:
        sub.stop_and_join()
    assert reconnects == 0
    got = raw.get(f"{queue}.dlq")
    assert got is not None
    _, props, dead_body = got
    headers = props.headers  # type: ignore[attr-defined]
    assert dead_body == body
    assert headers["filler"] == "f" * filler  # the sender's headers, whole
    if outcome == "trimmed":
        assert headers[ERROR_TYPE] == "builtins.RuntimeError"
        assert headers[ERROR_MESSAGE].endswith("[truncated to fit frame_max]")
        assert len(headers[ERROR_MESSAGE]) < 1000
    else:
        assert ERROR_TYPE not in headers
        assert headers["x-death"][0]["reason"] == "rejected"


def test_publishing_headers_larger_than_frame_max_fails_once_instead_of_resending(
    pool: ConnectionPool, names: Names
) -> None:
    exchange = names.exchange
    publisher = EventPublisher(pool, "p", exchange)
    try:
        publisher.publish(query("declares the exchange"), "k", mandatory=False)
        with pytest.raises(InvalidMessageError, match="frame_max"):
            publisher.publish(
                query("too big"), "k", headers={"huge": "h" * FRAME_MAX}, mandatory=False
            )
        reconnects = pool.health().publishing.reconnects
        publisher.publish(query("and the next goes out"), "k", mandatory=False)
    finally:
        publisher.close()
    assert reconnects <= 1  # the broker closed the connection once; nothing re-sent
