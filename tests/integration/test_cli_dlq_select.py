"""`chimera-bus dlq replay` and `purge` by selection (--id, --error-type, --since) and
replay to another routing key, on RabbitMQ."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from messaging import ConnectionPool
from messaging.config import RabbitMQConfig
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for
from tests.integration.test_cli import cli, dead_letters, put_in_dlq, rejected_by_broker


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    made = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield made
    made.close()


def letters(queue: str) -> list[dict[str, object]]:
    result = cli("dlq", "list", queue, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def ids_of(queue: str) -> list[str]:
    return [str(letter["message_id"]) for letter in letters(queue)]


def test_replay_by_id_replays_only_that_one_and_keeps_the_others_in_order(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["a", "b", "c"])
    a, b, c = ids_of(queue)

    declined = cli("dlq", "replay", queue, "--id", b, input="n\n")
    assert f"Replay 1 matching id {b} of 3 dead letter(s)" in declined.output
    assert raw.depth(f"{queue}.dlq") == 3

    result = cli("dlq", "replay", queue, "--id", b, "--yes")
    assert result.exit_code == 0, result.output
    assert "replayed 1 of 1" in result.output
    assert ids_of(queue) == [a, c]
    assert raw.depth(queue) == 1
    method, props, _ = raw.channel.basic_get(queue, auto_ack=True)
    assert method is not None
    assert props.message_id == b


def test_purge_and_replay_by_error_type_full_or_short_name(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["boom 1", "boom 2"])  # builtins.RuntimeError
    put_in_dlq(
        raw, queue, query("no price").SerializeToString(),
        type="chimera.v1.QueryRequest", message_id="priceless",
        headers={
            "x-chimera-error-type": "shop.errors.PriceMissing",
            "x-chimera-original-exchange": exchange,
            "x-chimera-original-routing-key": "query.request",
        },
    )  # fmt: skip

    purged = cli("dlq", "purge", queue, "--error-type", "PriceMissing", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "purged 1 dead letter(s)" in purged.output
    assert "priceless" not in ids_of(queue)
    assert len(ids_of(queue)) == 2

    none = cli("dlq", "replay", queue, "--error-type", "KeyError", input="y\n")
    assert none.exit_code == 0, none.output
    assert "no dead letter matches (error type KeyError)" in none.output

    replayed = cli("dlq", "replay", queue, "--error-type", "builtins.RuntimeError", "--yes")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 2 of 2" in replayed.output
    assert raw.depth(f"{queue}.dlq") == 0


def test_since_picks_dead_letters_by_when_they_died(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.*"])
    sub.run_in_thread()
    sub.stop_and_join()  # the queue and its DLQ exist; nothing consumes now
    rejected_by_broker(raw, exchange, queue, ["fresh"])  # x-death time: now
    two_days_ago = int((datetime.now(UTC) - timedelta(days=2)).timestamp())
    put_in_dlq(raw, queue, b"\x01", message_id="old", timestamp=two_days_ago)
    put_in_dlq(raw, queue, b"\x02", message_id="recent", timestamp=int(time.time()))

    purged = cli("dlq", "purge", queue, "--since", "1d", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "purged 2 dead letter(s)" in purged.output
    assert ids_of(queue) == ["old"]

    since = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    counted = cli("dlq", "purge", queue, "--since", since, input="n\n")
    assert "Delete 1 matching dead since" in counted.output

    bad = cli("dlq", "purge", queue, "--since", "last tuesday", "--yes")
    assert bad.exit_code == 2
    assert "neither a duration" in bad.output
    assert ids_of(queue) == ["old"]


def test_replay_to_another_routing_key(pool: ConnectionPool, raw: RawBroker, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    fixed_queue = names.queue("fixed")
    dead_letters(pool, raw, exchange, queue, ["send me elsewhere", "leave me"])
    moved, stays = ids_of(queue)
    fixed = Recorder(pool, exchange=exchange, queue=fixed_queue, routing_keys=["fixed.*"])
    fixed.run_in_thread()
    try:
        both = cli("dlq", "replay", queue, "--to-queue", "--routing-key", "fixed.request")
        assert both.exit_code == 2
        assert "give one" in both.output

        result = cli(
            "dlq", "replay", queue, "--id", moved, "--routing-key", "fixed.request", "--yes"
        )
        assert result.exit_code == 0, result.output
        assert "replayed 1 of 1" in result.output
        wait_for(lambda: fixed.texts() == ["send me elsewhere"], what="the moved message")
    finally:
        fixed.stop_and_join()
    assert fixed.received[0][1]["routing_key"] == "fixed.request"
    assert fixed.received[0][1]["message_id"] == moved
    assert ids_of(queue) == [stays]
    assert raw.depth(queue) == 0  # not sent to the original key's queue
