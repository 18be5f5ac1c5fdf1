"""Fixtures shared by the tests that talk to the real broker, and the rule for when they may run."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pika
import pytest

from messaging.config import RabbitMQConfig
from tests import leaks
from tests.broker_env import BROKER as BROKER


def broker_is_up() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=2):
            return True
    except OSError:
        return False


@dataclass
class Names:
    """Unique exchange and queue names for one test; all deleted afterwards."""

    prefix: str
    exchanges: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)

    @property
    def exchange(self) -> str:
        return self.new_exchange("events")

    def new_exchange(self, suffix: str) -> str:
        name = f"{self.prefix}.{suffix}"
        self.exchanges.update({name, f"{name}.dlx"})
        return name

    def queue(self, suffix: str = "q") -> str:
        name = f"{self.prefix}.{suffix}"
        self.queues.update({name, f"{name}.dlq"})
        return name


@pytest.fixture
def names() -> Iterator[Names]:
    names = Names(prefix=f"test-{uuid.uuid4().hex[:10]}")
    yield names
    delete_names(names)


def delete_names(names: Names) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    try:
        channel = connection.channel()
        for queue in names.queues:
            channel.queue_delete(queue)
        for exchange in names.exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()


@pytest.fixture
def config() -> RabbitMQConfig:
    return RabbitMQConfig(host=BROKER[0], port=BROKER[1], connection_name="chimera-test")


class RawBroker:
    """A pika connection for looking at the broker behind the library's back."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
        self.channel = self.connection.channel()

    def depth(self, queue: str) -> int:
        ok = self.channel.queue_declare(queue, passive=True)
        return int(ok.method.message_count)

    def consumers(self, queue: str) -> int:
        ok = self.channel.queue_declare(queue, passive=True)
        return int(ok.method.consumer_count)

    def get(self, queue: str) -> tuple[object, object, bytes] | None:
        method, props, body = self.channel.basic_get(queue, auto_ack=True)
        if method is None:
            return None
        return method, props, body

    def publish(self, exchange: str, routing_key: str, body: bytes, **props: object) -> None:
        self.channel.basic_publish(
            exchange, routing_key, body, pika.BasicProperties(delivery_mode=2, **props)
        )

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@pytest.fixture
def raw() -> Iterator[RawBroker]:
    broker = RawBroker()
    yield broker
    broker.close()


BROKER_SUITES = ("integration", "faults")


def needs_broker(item: pytest.Item) -> bool:
    """Tests under tests/integration and tests/faults, and any marked ``rabbitmq``."""
    parts = item.path.parts
    in_broker_suite = "tests" in parts and any(suite in parts for suite in BROKER_SUITES)
    return in_broker_suite or item.get_closest_marker("rabbitmq") is not None


_broker_up: bool | None = None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that needs RabbitMQ FAILS when it is down: never a silent skip.

    The unit tests and the memory rows of tests/conformance need no broker
    and run anyway (``pytest tests/unit tests/conformance -m "not rabbitmq"``).
    """
    global _broker_up
    if not needs_broker(item):
        return
    if _broker_up is None:
        _broker_up = broker_is_up()
    if not _broker_up:
        pytest.fail(
            f"RabbitMQ is not answering on {BROKER[0]}:{BROKER[1]}, and this test needs it; "
            "start it with `rabbitmq-server -detached && rabbitmqctl await_startup` (or "
            "`scripts/rabbit-node start NAME PORT`), or run only the tests that need no "
            'broker: pytest tests/unit tests/conformance -m "not rabbitmq"',
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    # The library's forgotten coroutines and abandoned tasks fail the test (tests/leaks.py).
    config.pluginmanager.register(leaks, "chimera-leaks")
