"""A test's view of an in-memory broker: run agents, publish, ask, wait, look inside."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message as ProtoMessage
from pydantic import SecretStr

from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.config import RabbitMQConfig
from messaging.connection import ConnectionPool
from messaging.headers import (
    ATTEMPTS,
    ERROR_MESSAGE,
    ERROR_TYPE,
    FAILED_AGENT,
    ORIGINAL_ROUTING_KEY,
)
from messaging.publisher import EventPublisher
from messaging.serialization import deserialize, message_class_for
from messaging.topology import dlq_name
from messaging.transport.base import Properties
from messaging.transport.memory import ManualClock, MemoryBroker, install_broker, remove_broker
from messaging.transport.memory.model import Message


class _SyncConsumer(Protocol):
    @property
    def is_consuming(self) -> bool: ...
    def start_consuming(self) -> None: ...
    def stop(self) -> None: ...


class _AsyncConsumer(Protocol):
    @property
    def is_consuming(self) -> bool: ...
    async def start(self) -> None: ...
    async def stop(self, timeout: float = 30.0) -> None: ...


@dataclass(frozen=True)
class Stored:
    """A message sitting in a queue, decoded by its ``type`` property."""

    message: ProtoMessage
    routing_key: str
    """The key it was published with (also after a retry or dead-lettering)."""
    properties: Properties
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetter(Stored):
    """A message in a dead-letter queue, with why it is there."""

    error_type: str | None = None
    """The exception's qualified name, e.g. ``builtins.ValueError``."""
    error_message: str | None = None
    failed_agent: str | None = None
    attempts: int = 0


class MemoryBus:
    """An in-memory broker of its own, a pool on it, and what a test does with them.

    Made by the ``memory_bus`` fixture (or :meth:`fresh`); :meth:`close` stops
    every agent it started, closes its pools and forgets the broker.
    """

    def __init__(self, broker: MemoryBroker, clock: ManualClock) -> None:
        self.broker = broker
        self.clock = clock
        self.config = RabbitMQConfig(url=SecretStr(f"memory://{broker.name}"))
        self._pool: ConnectionPool | None = None
        self._aio_pools: list[AsyncConnectionPool] = []
        self._publishers: dict[str, EventPublisher] = {}
        self._threads: list[tuple[_SyncConsumer, threading.Thread]] = []

    @classmethod
    def fresh(cls, label: str = "") -> MemoryBus:
        """A bus on a new broker, reachable as ``memory://test-<id>`` until closed."""
        clock = ManualClock()
        name = f"test-{uuid.uuid4().hex[:12]}"
        broker = install_broker(MemoryBroker(name, clock=clock))
        bus = cls(broker, clock)
        bus.label = label
        return bus

    label = ""

    # -- pools -------------------------------------------------------------

    @property
    def pool(self) -> ConnectionPool:
        """A :class:`~messaging.ConnectionPool` on this bus, for sync agents and publishers."""
        if self._pool is None:
            self._pool = ConnectionPool(self.config)
        return self._pool

    def aio_pool(self) -> AsyncConnectionPool:
        """A new :class:`~messaging.aio.AsyncConnectionPool` on this bus (closed at the end)."""
        pool = AsyncConnectionPool(self.config)
        self._aio_pools.append(pool)
        return pool

    # -- time ----------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move this broker's clock: TTLs and retry delays that fall due fire now."""
        self.clock.advance(seconds)

    # -- running agents --------------------------------------------------------

    def start(self, agent: _SyncConsumer, timeout: float = 5.0) -> None:
        """Run a sync agent's ``start_consuming()`` on a thread; return once it consumes.

        It is stopped when the bus closes (or call its ``stop()`` yourself).
        """
        thread = threading.Thread(
            target=agent.start_consuming, name=f"agent-{type(agent).__name__}", daemon=True
        )
        thread.start()
        self._threads.append((agent, thread))
        self.wait_until(
            lambda: agent.is_consuming or not thread.is_alive(),
            timeout,
            f"{type(agent).__name__} to start consuming",
        )
        if not thread.is_alive():
            raise RuntimeError(f"{type(agent).__name__}.start_consuming() returned at once")

    @asynccontextmanager
    async def running(self, agent: _AsyncConsumer) -> AsyncIterator[None]:
        """``async with bus.running(agent):`` an async agent consumes inside the block."""
        await agent.start()
        try:
            yield
        finally:
            await agent.stop()

    # -- sending -------------------------------------------------------------

    def _publisher(self, exchange: str) -> EventPublisher:
        publisher = self._publishers.get(exchange)
        if publisher is None:
            publisher = EventPublisher(self.pool, "memory-bus", exchange)
            self._publishers[exchange] = publisher
        return publisher

    def publish(
        self,
        message: ProtoMessage,
        routing_key: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        **kwargs: Any,
    ) -> str:
        """Publish as a client would (confirmed, mandatory); returns the ``message_id``."""
        return self._publisher(exchange).publish(message, routing_key, **kwargs)

    def request(
        self,
        message: ProtoMessage,
        routing_key: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        timeout: float = 5.0,
    ) -> ProtoMessage:
        """Send a request and return the reply (direct reply-to), as a client would."""
        return self._publisher(exchange).request(message, routing_key, timeout=timeout)

    # -- looking inside ----------------------------------------------------------

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those delivered and unacked)."""
        state = self.broker.queue_state(queue)
        if state is None:
            raise LookupError(f"no queue {queue!r} on {self.broker.name}")
        return state.ready

    def messages(self, queue: str) -> list[Stored]:
        """What sits in ``queue``, oldest first, decoded; it stays there."""
        return [_stored(m) for m in self.broker.peek(queue)]

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """What sits in the dead-letter queue of ``queue`` (``<queue>.dlq``), with why."""
        letters = []
        for stored in self.messages(dlq_name(queue)):
            headers = stored.headers
            attempts = headers.get(ATTEMPTS)
            letters.append(
                DeadLetter(
                    stored.message,
                    stored.routing_key,
                    stored.properties,
                    headers,
                    error_type=_text(headers.get(ERROR_TYPE)),
                    error_message=_text(headers.get(ERROR_MESSAGE)),
                    failed_agent=_text(headers.get(FAILED_AGENT)),
                    attempts=attempts if isinstance(attempts, int) else 0,
                )
            )
        return letters

    # -- waiting ---------------------------------------------------------------

    def wait_until(
        self, condition: Callable[[], bool], timeout: float = 5.0, what: str = "the condition"
    ) -> None:
        """Block until ``condition()`` holds; TimeoutError naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.1f}s for {what}")
            time.sleep(0.002)

    async def wait_until_async(
        self, condition: Callable[[], bool], timeout: float = 5.0, what: str = "the condition"
    ) -> None:
        """As :meth:`wait_until`, letting the event loop (and async agents) run meanwhile."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.1f}s for {what}")
            await asyncio.sleep(0.002)

    def _settled(self, queues: tuple[str, ...]) -> bool:
        for queue in queues:
            state = self.broker.queue_state(queue)
            if state is not None and (state.ready or state.unacked):
                return False
        return True

    def drain(self, *queues: str, timeout: float = 5.0) -> None:
        """Wait until every message in ``queues`` was handled: none ready, none unacked.

        After it, a handler has run for each message that was there, and what
        it published is in place (a failed message sits in its retry or
        dead-letter queue).
        """
        self.wait_until(lambda: self._settled(queues), timeout, f"{', '.join(queues)} to drain")

    async def drain_async(self, *queues: str, timeout: float = 5.0) -> None:
        """As :meth:`drain`, for async agents running on this event loop."""
        await self.wait_until_async(
            lambda: self._settled(queues), timeout, f"{', '.join(queues)} to drain"
        )

    # -- the end -----------------------------------------------------------------

    def close(self) -> None:
        for agent, thread in self._threads:
            agent.stop()
            thread.join(10)
        self._threads.clear()
        for publisher in self._publishers.values():
            publisher.close()
        self._publishers.clear()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for pool in self._aio_pools:
            if not pool.closed:
                asyncio.run(pool.close())
        self._aio_pools.clear()
        remove_broker(self.broker.name)


def _stored(message: Message) -> Stored:
    props = message.properties
    headers = dict(props.headers or {})
    cls = message_class_for(props.message_type or "")
    original = headers.get(ORIGINAL_ROUTING_KEY)
    return Stored(
        deserialize(message.body, cls),
        str(original) if original else message.routing_key,
        props,
        headers,
    )


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
