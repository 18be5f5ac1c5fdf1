"""A message that kills its consumer process is dead-lettered, not redelivered for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from messaging import ConnectionPool, EventPublisher
from messaging import headers as h
from messaging.config import RabbitMQConfig
from tests.conftest import Names, RawBroker
from tests.integration.helpers import query, wait_for

CHILD = Path(__file__).with_name("crashing_consumer.py")


def run_consumer_until_exit(exchange: str, queue: str, limit: int) -> tuple[int, str]:
    """Start the crashing consumer; return its exit code and output once it exits or idles."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), exchange, queue, str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = child.communicate(timeout=8)
    except subprocess.TimeoutExpired:
        child.terminate()  # it survived: nothing left that kills it
        out, _ = child.communicate(timeout=30)
    return child.returncode, out


@pytest.mark.faults
def test_a_message_that_kills_its_consumer_ends_in_the_dlq(
    config: RabbitMQConfig, names: Names, raw: RawBroker
) -> None:
    exchange, queue = names.exchange, names.queue()
    limit = 2
    # First run declares the topology; publish once it is there.
    child = subprocess.Popen(
        [sys.executable, str(CHILD), exchange, queue, str(limit)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "consuming"
    pool = ConnectionPool(config)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(query("crash"), "work", message_id="poison-1")
    publisher.publish(query("fine"), "work", message_id="fine-1")
    publisher.close()
    pool.close()
    assert child.wait(timeout=30) == 17, "the consumer died on the poison message"

    crashes = 1
    outputs = []
    for _ in range(limit + 2):
        code, out = run_consumer_until_exit(exchange, queue, limit)
        outputs.append(out)
        if code != 17:
            break
        crashes += 1

    assert crashes == limit + 1, f"expected {limit + 1} crashes, saw {crashes}: {outputs}"
    assert "handled fine" in "".join(outputs)
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the poison message in the DLQ")
    got = raw.get(f"{queue}.dlq")
    assert got is not None
    _, props, _ = got
    headers = props.headers  # type: ignore[attr-defined]
    assert props.message_id == "poison-1"  # type: ignore[attr-defined]
    assert headers[h.ERROR_TYPE] == "messaging.errors.PoisonMessageError"
    assert headers[h.REDELIVERIES] == limit
    assert headers[h.ORIGINAL_ROUTING_KEY] == "work"
    assert raw.depth(queue) == 0
