"""One suite, two transports: every test here runs on RabbitMQ and on the in-process broker.

The ``target`` fixture is parametrised: ``rabbitmq`` (marked, so it needs the
broker; see tests/conftest.py) and ``memory`` (a fresh in-process broker per
test, needing nothing). A test uses the bus through its public API and looks
at the broker through ``target``'s few raw operations, which each transport
implements its own way. A difference between the two rows is a bug in the
memory broker.

Time: on RabbitMQ it passes for real; on the memory broker it moves only when
``target.advance(seconds)`` is called, so a retry delay costs no sleeping
there. Tests call ``advance`` and then wait; on RabbitMQ the wait covers it.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pika
import pytest
from pydantic import SecretStr

from messaging import RabbitMQConfig
from messaging.transport.base import Properties
from messaging.transport.memory import ManualClock, MemoryBroker, install_broker, remove_broker
from messaging.transport.memory.errors import BrokerError
from tests.broker_env import BROKER
from tests.faults.toolkit import broker as rabbit


class Consuming(Protocol):
    @property
    def is_consuming(self) -> bool: ...
    def start_consuming(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Taken:
    """A message taken off a queue by the test, whatever the transport."""

    body: bytes
    exchange: str
    routing_key: str
    redelivered: bool
    headers: dict[str, Any]
    properties: dict[str, Any]


@dataclass
class Target(ABC):
    """The broker under test: a config for the bus, and raw operations for the test."""

    name: str
    prefix: str = field(default_factory=lambda: f"conf-{uuid.uuid4().hex[:10]}")
    exchanges: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)
    _threads: list[tuple[Consuming, threading.Thread]] = field(default_factory=list)

    @property
    @abstractmethod
    def config(self) -> RabbitMQConfig: ...

    # -- names, deleted afterwards ---------------------------------------------

    def exchange(self, suffix: str = "events") -> str:
        name = f"{self.prefix}.{suffix}"
        self.exchanges.update({name, f"{name}.dlx"})
        return name

    def queue(self, suffix: str = "q", retries: int = 0) -> str:
        name = f"{self.prefix}.{suffix}"
        self.queues.update({name, f"{name}.dlq"})
        self.queues.update(f"{name}.retry.{n}" for n in range(1, retries + 1))
        return name

    # -- raw operations --------------------------------------------------------

    @abstractmethod
    def depth(self, queue: str) -> int | None:
        """Ready messages, or None when the queue does not exist."""

    @abstractmethod
    def consumers(self, queue: str) -> int: ...

    @abstractmethod
    def take_all(self, queue: str) -> list[Taken]:
        """Every ready message of ``queue``, removed (acked)."""

    @abstractmethod
    def publish_raw(self, exchange: str, routing_key: str, body: bytes, **props: Any) -> None: ...

    @abstractmethod
    def declare_raw(
        self, queue: str, arguments: dict[str, Any], bind: tuple[str, str] | None = None
    ) -> str | None:
        """Declare ``queue`` durable with ``arguments`` (and bound to the topic exchange
        ``bind[0]`` with key ``bind[1]``); the refusal's text, or None if all went through."""

    @abstractmethod
    def delete_queue(self, queue: str) -> None: ...

    @abstractmethod
    def take_without_ack_then_close(self, queue: str) -> bool:
        """Take one message unacked, then close the channel: it goes back, redelivered."""

    @abstractmethod
    def close_all_connections(self) -> None:
        """The broker closes every client connection (the bus reconnects by itself)."""

    @abstractmethod
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass on the broker's clock (real time on RabbitMQ: a no-op)."""

    # -- waiting and running -----------------------------------------------------

    def wait_for(
        self,
        condition: Callable[[], bool],
        timeout: float = 15.0,
        what: str = "condition",
        *,
        advancing: float = 0.0,
    ) -> None:
        """Poll ``condition``; with ``advancing``, the broker's clock moves that much per poll."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"[{self.name}] timed out after {timeout}s waiting for {what}")
            time.sleep(0.005)
            if advancing:
                self.advance(advancing)

    def start(self, agent: Consuming) -> None:
        thread = threading.Thread(target=agent.start_consuming, daemon=True)
        thread.start()
        self._threads.append((agent, thread))
        self.wait_for(lambda: agent.is_consuming, what="the consumer to attach")

    def stop(self, agent: Consuming) -> None:
        agent.stop()
        for running, thread in self._threads:
            if running is agent:
                thread.join(30)
                assert not thread.is_alive(), "start_consuming did not return after stop()"

    def finish(self) -> None:
        for agent, thread in self._threads:
            agent.stop()
            thread.join(30)


class RabbitTarget(Target):
    def __init__(self) -> None:
        super().__init__("rabbitmq")
        self._connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))

    @property
    def config(self) -> RabbitMQConfig:
        return RabbitMQConfig(host=BROKER[0], port=BROKER[1], connection_name="conformance")

    def _channel(self) -> Any:
        return self._connection.channel()

    def depth(self, queue: str) -> int | None:
        channel = self._channel()
        try:
            ok = channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return None
        count = int(ok.method.message_count)
        channel.close()
        return count

    def consumers(self, queue: str) -> int:
        channel = self._channel()
        try:
            ok = channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        count = int(ok.method.consumer_count)
        channel.close()
        return count

    def take_all(self, queue: str) -> list[Taken]:
        channel = self._channel()
        taken = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            taken.append(
                Taken(
                    body,
                    method.exchange,
                    method.routing_key,
                    bool(method.redelivered),
                    dict(props.headers or {}),
                    {
                        "content_type": props.content_type,
                        "delivery_mode": props.delivery_mode,
                        "message_id": props.message_id,
                        "correlation_id": props.correlation_id,
                        "type": props.type,
                        "app_id": props.app_id,
                        "timestamp": props.timestamp,
                    },
                )
            )
        channel.close()
        return taken

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, **props: Any) -> None:
        channel = self._channel()
        channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(**props))
        channel.close()

    def declare_raw(
        self, queue: str, arguments: dict[str, Any], bind: tuple[str, str] | None = None
    ) -> str | None:
        channel = self._channel()
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
            if bind is not None:
                channel.exchange_declare(bind[0], "topic", durable=True)
                channel.queue_bind(queue, bind[0], bind[1])
        except pika.exceptions.ChannelClosedByBroker as exc:
            return str(exc.reply_text)
        channel.close()
        return None

    def advance(self, seconds: float) -> None:
        return None  # real time passes while the test waits

    def delete_queue(self, queue: str) -> None:
        channel = self._channel()
        channel.queue_delete(queue)
        channel.close()

    def take_without_ack_then_close(self, queue: str) -> bool:
        channel = self._channel()
        method, _, _ = channel.basic_get(queue, auto_ack=False)
        channel.close()
        return method is not None

    def close_all_connections(self) -> None:
        rabbit.close_all_connections("conformance: connections closed")
        # That closed the test's own connection as well.
        self._connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))

    def finish(self) -> None:
        super().finish()
        channel = self._channel()
        for queue in self.queues:
            channel.queue_delete(queue)
        for exchange in self.exchanges:
            channel.exchange_delete(exchange)
        self._connection.close()


class MemoryTarget(Target):
    def __init__(self) -> None:
        super().__init__("memory")
        self.clock = ManualClock()
        name = f"conformance-{uuid.uuid4().hex}"
        self.broker = install_broker(MemoryBroker(name, clock=self.clock))
        self._raw = self.broker.connect("conformance-raw")

    @property
    def config(self) -> RabbitMQConfig:
        return RabbitMQConfig(
            url=SecretStr(f"memory://{self.broker.name}"), connection_name="conformance"
        )

    def depth(self, queue: str) -> int | None:
        state = self.broker.queue_state(queue)
        return None if state is None else state.ready

    def consumers(self, queue: str) -> int:
        state = self.broker.queue_state(queue)
        return 0 if state is None else state.consumers

    def take_all(self, queue: str) -> list[Taken]:
        channel = self._raw.channel()
        taken = []
        while (delivery := channel.basic_get(queue, no_ack=True)) is not None:
            props = delivery.properties
            taken.append(
                Taken(
                    delivery.body,
                    delivery.exchange,
                    delivery.routing_key,
                    delivery.redelivered,
                    dict(props.headers or {}),
                    {
                        "content_type": props.content_type,
                        "delivery_mode": props.delivery_mode,
                        "message_id": props.message_id,
                        "correlation_id": props.correlation_id,
                        "type": props.message_type,
                        "app_id": props.app_id,
                        "timestamp": props.timestamp,
                    },
                )
            )
        channel.close()
        return taken

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, **props: Any) -> None:
        if "type" in props:
            props["message_type"] = props.pop("type")
        channel = self._raw.channel()
        channel.basic_publish(body, exchange, routing_key, Properties(**props))
        channel.close()

    def declare_raw(
        self, queue: str, arguments: dict[str, Any], bind: tuple[str, str] | None = None
    ) -> str | None:
        channel = self._raw.channel()
        try:
            channel.queue_declare(queue, durable=True, arguments=arguments)
            if bind is not None:
                channel.exchange_declare(bind[0], "topic", durable=True)
                channel.queue_bind(queue, bind[0], bind[1])
        except BrokerError as exc:
            return exc.reply_text
        channel.close()
        return None

    def delete_queue(self, queue: str) -> None:
        channel = self._raw.channel()
        channel.queue_delete(queue)
        channel.close()

    def take_without_ack_then_close(self, queue: str) -> bool:
        channel = self._raw.channel()
        delivery = channel.basic_get(queue, no_ack=False)
        channel.close()
        return delivery is not None

    def close_all_connections(self) -> None:
        self.broker.close_all_connections("conformance: connections closed")
        self._raw = self.broker.connect("conformance-raw")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def finish(self) -> None:
        super().finish()
        remove_broker(self.broker.name)


@pytest.fixture(params=[pytest.param("rabbitmq", marks=pytest.mark.rabbitmq), "memory"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    made: Target = RabbitTarget() if request.param == "rabbitmq" else MemoryTarget()
    try:
        yield made
    finally:
        made.finish()
