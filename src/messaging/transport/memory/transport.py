"""The bus's transport Protocols over the in-process broker (``RABBITMQ__URL=memory://``).

The same contract as :mod:`messaging.transport.amqp`: channels open lazily,
reopen after the broker closes them (a channel error, or the connection forced
closed by :meth:`MemoryBroker.close_all_connections`), re-declare, re-consume
and bump their generation; publishes with confirms return once the broker took
the message; deliveries run as one task each on the consumer's event loop, in
order. The broker is shared by every thread and loop of the process, so its
callbacks only hand events to the loop that owns the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from messaging.backoff import RetryPolicy
from messaging.config import BrokerNode, RabbitMQConfig
from messaging.errors import ClosedError, MessagingError, TopologyMissingError
from messaging.topology import Topology
from messaging.transport.base import (
    Channel,
    ConnectionHealth,
    ConnectionLost,
    DeliveryCallback,
    InlineCallback,
    MessageProperties,
    Properties,
    QueueInfo,
    ReopenListener,
)
from messaging.transport.memory import broker as memory
from messaging.transport.memory.errors import (
    BrokerError,
    ChannelClosedError,
    ConnectionClosedError,
    NotFoundError,
)
from messaging.transport.memory.model import Delivery as BrokerDelivery
from messaging.transport.memory.translate import (
    translate_publish_error,
    translate_publish_result,
    translate_topology_error,
)

log = logging.getLogger("messaging.connection")
channel_log = logging.getLogger("messaging.channel")

ReconnectListener = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class MemoryDelivery:
    """A delivery as the core sees it: the broker's message and the channel generation."""

    body: bytes
    properties: Properties
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    generation: int


class MemoryConnection:
    """A connection to the process's broker named by ``memory://NAME``; never fails to open."""

    def __init__(
        self,
        config: RabbitMQConfig,
        policy: RetryPolicy,
        purpose: str,
        *,
        broker: memory.MemoryBroker | None = None,
    ) -> None:
        name = config.memory_broker if broker is None else broker.name
        if name is None:
            raise ValueError("MemoryConnection needs RABBITMQ__URL=memory://[NAME] or a broker")
        self.config = config
        self.policy = policy
        self._purpose = purpose
        self.broker_name = name
        self._broker = broker  # given: this one; None: looked up by name on each use
        self._connection: memory.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[ReconnectListener] = []
        self._channels: list[MemoryChannel] = []
        self._connected_at = 0.0
        self._reconnects = 0
        self._last_error: str | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def purpose(self) -> str:
        return self._purpose

    @property
    def broker(self) -> memory.MemoryBroker:
        """The broker this connection reaches: the one given, else looked up now by name
        (a test may have installed it)."""
        if self._broker is not None:
            return self._broker
        return memory.get_broker(self.broker_name)

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and self._connection.is_open

    async def connect(self) -> None:
        await self.get()

    async def get(self) -> memory.Connection:
        if self._closed:
            raise ClosedError(f"the {self._purpose} connection is closed")
        connection = self._connection
        if connection is not None and connection.is_open:
            return connection
        return self._open()

    def _open(self) -> memory.Connection:
        self._loop = asyncio.get_running_loop()
        connection = self.broker.connect(f"{self.config.connection_name}:{self._purpose}")
        connection.close_callbacks.append(self._closed_by_broker)
        self._connection = connection
        self._connected_at = time.monotonic()
        where = self.config.safe_url() if self._broker is None else f"memory://{self.broker_name}"
        log.info("%s connection open to %s", self._purpose, where)
        return connection

    def _closed_by_broker(self, reason: BrokerError | None) -> None:
        # Called with the broker's lock held, on any thread.
        loop = self._loop
        if reason is not None and loop is not None:
            _call_on(loop, self._lost, reason)

    def _lost(self, reason: BrokerError) -> None:
        if self._closed or self._connection is None or self._connection.is_open:
            return
        self._connection = None
        self._last_error = str(reason)
        log.warning("%s connection lost (%s); reconnecting", self._purpose, reason)
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        if self._closed:
            return
        self._open()
        self._reconnects += 1
        log.info("%s connection restored (reconnect #%d)", self._purpose, self._reconnects)
        for listener in list(self._listeners):
            try:
                await listener()
            except Exception:
                log.exception("%s reconnect listener failed", self._purpose)

    def on_reconnect(self, listener: ReconnectListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ReconnectListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def node(self) -> BrokerNode | None:
        """None: the broker is in this process, on no node."""
        return None

    def header_excess(self, properties: MessageProperties, body_size: int) -> int:
        """0: no frames in process, so any header fits.

        (RabbitMQ closes the connection for a content header over its
        ``frame_max``, 128 KiB by default; this broker does not enforce that.)
        """
        return 0

    def health(self) -> ConnectionHealth:
        connected = self.is_connected
        return ConnectionHealth(
            purpose=self._purpose,
            connected=connected,
            uptime=time.monotonic() - self._connected_at if connected else 0.0,
            reconnects=self._reconnects,
            last_error=self._last_error,
            blocked=False,
        )

    def channel(
        self, purpose: str, *, confirms: bool = False, prefetch: int | None = None
    ) -> Channel:
        channel = MemoryChannel(self, purpose, confirms=confirms, prefetch=prefetch)
        self._channels.append(channel)
        return channel

    async def release(self, channel: Channel) -> None:
        if isinstance(channel, MemoryChannel) and channel in self._channels:
            self._channels.remove(channel)
        await channel.close()

    def inspector(self, purpose: str) -> MemoryInspector:
        return MemoryInspector(self)

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.close()
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            connection.close()
            log.info("%s connection closed", self._purpose)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@dataclass
class _Consumer:
    queue: str
    callback: DeliveryCallback | InlineCallback
    exclusive: bool
    no_ack: bool
    tag: str
    inline: bool = False


class MemoryChannel:
    """A channel on the in-process broker that restores itself, as the AMQP one does."""

    def __init__(
        self,
        connection: MemoryConnection,
        purpose: str,
        *,
        confirms: bool = False,
        prefetch: int | None = None,
    ) -> None:
        self.connection = connection
        self._purpose = purpose
        self.confirms = confirms
        self.prefetch = prefetch
        self._generation = 0
        self._channel: memory.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._topologies: list[Topology] = []
        self._consumers: dict[str, _Consumer] = {}
        self._listeners: list[ReopenListener] = []
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._keys = 0
        connection.on_reconnect(self._restore)

    @property
    def purpose(self) -> str:
        return self._purpose

    @property
    def generation(self) -> int:
        return self._generation

    def on_reopen(self, listener: ReopenListener) -> None:
        self._listeners.append(listener)

    # -- opening -----------------------------------------------------------

    async def _open_channel(self) -> memory.Channel:
        channel = self._channel
        if channel is not None and channel.is_open:
            return channel
        if self._closed:
            raise ClosedError(f"the {self._purpose} channel is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            channel = self._channel
            if channel is not None and channel.is_open:
                return channel
            return await self._reopen()

    async def _reopen(self) -> memory.Channel:
        connection = await self.connection.get()
        self._loop = asyncio.get_running_loop()
        try:
            channel = connection.channel()
            if self.prefetch is not None:
                channel.basic_qos(self.prefetch)
            if self.confirms:
                channel.confirm_select()
            for topology in self._topologies:
                _declare(channel, topology)
        except ConnectionClosedError as exc:
            raise ConnectionLost(f"the {self.connection.purpose} connection is gone") from exc
        first = self._generation == 0
        self._generation += 1
        self._channel = channel
        channel.close_callbacks.append(lambda reason: self._closed_by_broker(channel, reason))
        for consumer in self._consumers.values():
            self._basic_consume(channel, consumer)
        if not first:
            channel_log.info(
                "%s channel restored (generation %d, %d consumer(s))",
                self._purpose,
                self._generation,
                len(self._consumers),
            )
            for listener in list(self._listeners):
                await listener(self._generation)
        return channel

    def _closed_by_broker(self, channel: memory.Channel, reason: BrokerError | None) -> None:
        loop = self._loop
        if loop is not None:
            _call_on(loop, self._on_closed, channel, reason)

    def _on_closed(self, channel: memory.Channel, reason: BrokerError | None) -> None:
        if channel is not self._channel or self._closed:
            return
        self._channel = None
        if self.connection.is_connected and not isinstance(reason, ConnectionClosedError):
            channel_log.warning(
                "%s channel closed by the broker (%s); reopening", self._purpose, reason
            )
            self._spawn(self._restore())

    async def _restore(self) -> None:
        if self._closed:
            return
        try:
            await self._open_channel()
        except MessagingError as exc:
            channel_log.error("%s channel could not be restored: %s", self._purpose, exc)
        except Exception as exc:  # a background task must not die silently
            channel_log.warning("%s channel restore interrupted: %r", self._purpose, exc)

    # -- topology ----------------------------------------------------------

    async def declare(self, topology: Topology) -> None:
        connection = await self.connection.get()
        _declare_all_or_nothing(connection, topology)
        self._topologies.append(topology)

    async def verify(self, topology: Topology) -> None:
        """Check that ``topology``'s exchanges and queues exist; declare nothing."""
        await self.connection.get()
        broker = self.connection.broker
        missing = [
            f"exchange {e.name!r}"
            for e in topology.exchanges
            if broker.exchange_type(e.name) is None
        ]
        missing += [
            f"queue {q.name!r}" for q in topology.queues if broker.queue_state(q.name) is None
        ]
        if missing:
            raise TopologyMissingError(
                f"declare=False, and the broker has no {', '.join(missing)}: whoever manages "
                f"the broker's topology must create {'it' if len(missing) == 1 else 'them'} "
                f"first; nothing was declared"
            )

    async def bind_temporary_queue(self, exchange: str, routing_key: str) -> str:
        channel = await self._open_channel()
        try:
            ok = channel.queue_declare("", exclusive=True, auto_delete=True)
            channel.queue_bind(ok.queue, exchange, routing_key)
        except BrokerError as exc:
            raise translate_topology_error(exc) from exc
        return ok.queue

    # -- consuming ---------------------------------------------------------

    async def consume(
        self,
        queue: str,
        callback: DeliveryCallback | InlineCallback,
        *,
        exclusive: bool = False,
        no_ack: bool = False,
        inline: bool = False,
    ) -> str:
        self._keys += 1
        key = f"{self._purpose}-{queue}-{self._keys}"
        consumer = _Consumer(queue, callback, exclusive, no_ack, key, inline)
        channel = await self._open_channel()
        try:
            self._basic_consume(channel, consumer)
        except BrokerError as exc:
            raise translate_topology_error(exc) from exc
        self._consumers[key] = consumer
        return key

    def _basic_consume(self, channel: memory.Channel, consumer: _Consumer) -> None:
        loop = asyncio.get_running_loop()

        def on_message(delivery: BrokerDelivery) -> None:
            _call_on(loop, self._hand_over, consumer, delivery)

        def on_cancel(tag: str) -> None:
            _call_on(loop, self._cancelled_by_broker, consumer)

        channel.basic_consume(
            consumer.queue,
            on_message,
            no_ack=consumer.no_ack,
            exclusive=consumer.exclusive,
            consumer_tag=consumer.tag,
            on_cancel=on_cancel,
        )

    def _hand_over(self, consumer: _Consumer, delivery: BrokerDelivery) -> None:
        if self._consumers.get(consumer.tag) is not consumer:
            return  # cancelled meanwhile: the broker requeues it when the channel goes
        generation = self._generation if delivery.channel is self._channel else -1
        wrapped = _wrap(delivery, generation)
        if consumer.inline:
            inline = cast(InlineCallback, consumer.callback)
            inline(wrapped)  # in delivery order, on this loop, without a task
            return
        callback = cast(DeliveryCallback, consumer.callback)
        self._spawn(callback(wrapped))

    def _cancelled_by_broker(self, consumer: _Consumer) -> None:
        if self._consumers.get(consumer.tag) is not consumer:
            return
        channel_log.error(
            "%s: the broker cancelled the consumer on %s (queue deleted?); re-declaring "
            "and consuming again",
            self._purpose,
            consumer.queue,
        )
        self._spawn(self._reconsume(consumer))

    async def _reconsume(self, consumer: _Consumer) -> None:
        await asyncio.sleep(1.0)  # repeated deletions must not make this spin
        channel = self._channel
        if self._closed or self._consumers.get(consumer.tag) is not consumer:
            return
        if channel is None or not channel.is_open or consumer.tag in channel.consumer_tags:
            return
        try:
            for topology in self._topologies:
                _declare(channel, topology)
            self._basic_consume(channel, consumer)
        except BrokerError as exc:
            channel_log.warning(
                "%s: consuming %s again failed: %s", self._purpose, consumer.queue, exc
            )
            return
        channel_log.info("%s: consuming %s again", self._purpose, consumer.queue)

    def is_consuming(self, key: str) -> bool:
        channel = self._channel
        return (
            key in self._consumers
            and channel is not None
            and channel.is_open
            and key in channel.consumer_tags
        )

    async def cancel(self, key: str) -> None:
        consumer = self._consumers.pop(key, None)
        channel = self._channel
        if consumer is None or channel is None or not channel.is_open:
            return
        with contextlib.suppress(BrokerError):
            channel.basic_cancel(consumer.tag)

    async def get(self, queue: str) -> MemoryDelivery | None:
        channel = await self._open_channel()
        try:
            delivery = channel.basic_get(queue)
        except BrokerError as exc:
            raise translate_topology_error(exc) from exc
        return None if delivery is None else _wrap(delivery, self._generation)

    # -- publishing ----------------------------------------------------------

    async def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: MessageProperties,
        *,
        mandatory: bool,
        timeout: float,
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.connection.get()
                channel = await self._open_channel()
        except ConnectionClosedError as exc:
            raise ConnectionLost(str(exc)) from exc
        try:
            result = channel.basic_publish(
                body, exchange, routing_key, properties, mandatory=mandatory
            )
        except (ChannelClosedError, ConnectionClosedError) as exc:
            raise ConnectionLost(str(exc)) from exc
        except BrokerError as exc:
            raise translate_publish_error(exc, exchange, routing_key) from exc
        # A real broker answers later: let the loop run (and deliver) meanwhile.
        await asyncio.sleep(0)
        if self.confirms:
            translate_publish_result(result, exchange, routing_key, mandatory=mandatory)

    # -- settling ------------------------------------------------------------

    def ack(self, delivery_tag: int, generation: int, *, multiple: bool = False) -> bool:
        return self._settle(
            generation, lambda channel: channel.basic_ack(delivery_tag, multiple=multiple)
        )

    def nack(
        self, delivery_tag: int, generation: int, *, multiple: bool = False, requeue: bool = True
    ) -> bool:
        return self._settle(
            generation,
            lambda channel: channel.basic_nack(delivery_tag, multiple=multiple, requeue=requeue),
        )

    def reject(self, delivery_tag: int, generation: int, *, requeue: bool) -> bool:
        return self._settle(
            generation, lambda channel: channel.basic_reject(delivery_tag, requeue=requeue)
        )

    def _settle(self, generation: int, send: Callable[[memory.Channel], None]) -> bool:
        channel = self._channel
        if generation != self._generation or channel is None or not channel.is_open:
            return False
        try:
            send(channel)
        except BrokerError as exc:
            # As on RabbitMQ: the channel closes (and reopens); its messages are requeued.
            channel_log.debug("%s: settle refused: %s", self._purpose, exc)
        return True

    async def replace(self, why: str) -> None:
        """Nothing to do: an in-process channel cannot get stuck nacking (RabbitMQ's can)."""

    async def close(self) -> None:
        self._closed = True
        self.connection.remove_listener(self._restore)
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class MemoryInspector:
    """Looks at the broker directly: no channel to lose, nothing logged for a missing queue."""

    def __init__(self, connection: MemoryConnection) -> None:
        self._connection = connection

    async def _channel(self) -> memory.Channel:
        return (await self._connection.get()).channel()

    async def queue(self, name: str, timeout: float | None = None) -> QueueInfo | None:
        await self._connection.get()
        state = self._connection.broker.queue_state(name)
        return None if state is None else QueueInfo(name, state.ready, state.consumers)

    async def exchange_exists(self, name: str, timeout: float | None = None) -> bool:
        await self._connection.get()
        return name == "" or self._connection.broker.exchange_type(name) is not None

    async def delete_queue(self, name: str) -> int:
        channel = await self._channel()
        try:
            return channel.queue_delete(name)
        except BrokerError as exc:
            raise translate_topology_error(exc) from exc
        finally:
            channel.close()

    async def delete_exchange(self, name: str) -> None:
        channel = await self._channel()
        try:
            channel.exchange_delete(name)
        except BrokerError as exc:
            raise translate_topology_error(exc) from exc
        finally:
            channel.close()

    async def purge_queue(self, name: str) -> int:
        channel = await self._channel()
        try:
            return channel.queue_purge(name)
        except BrokerError as exc:
            raise translate_topology_error(exc) from exc
        finally:
            channel.close()

    async def close(self) -> None:
        return None


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """Hand an event from the broker (any thread, its lock held) to the loop that owns it.

    A loop that has already closed owned a pool nobody closed: the event has
    nowhere to go, and the broker's caller (a publisher elsewhere) must not fail for it.
    """
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _wrap(delivery: BrokerDelivery, generation: int) -> MemoryDelivery:
    return MemoryDelivery(
        body=delivery.body,
        properties=delivery.properties,
        delivery_tag=delivery.delivery_tag,
        redelivered=delivery.redelivered,
        exchange=delivery.exchange,
        routing_key=delivery.routing_key,
        generation=generation,
    )


def _declare(channel: memory.Channel, topology: Topology) -> None:
    for ex in topology.exchanges:
        channel.exchange_declare(ex.name, ex.type, durable=ex.durable, arguments=dict(ex.arguments))
    for q in topology.queues:
        channel.queue_declare(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=dict(q.arguments),
        )
    for b in topology.bindings:
        channel.queue_bind(b.queue, b.exchange, b.routing_key)


def _declare_all_or_nothing(connection: memory.Connection, topology: Topology) -> None:
    """Declare ``topology`` under the broker's lock: nobody sees it half done.

    On a refusal, what this call created is deleted again and the refusal is
    raised as a :class:`~messaging.errors.TopologyError` saying what differs.
    """
    broker = connection.broker
    with broker.lock:
        exchanges_before = set(broker.exchange_names())
        queues_before = set(broker.queue_names())
        channel = connection.channel()
        try:
            _declare(channel, topology)
        except BrokerError as exc:
            cleanup = connection.channel()
            for q in topology.queues:
                if q.name not in queues_before:
                    with contextlib.suppress(NotFoundError):
                        cleanup.queue_delete(q.name)
            for ex in topology.exchanges:
                if ex.name not in exchanges_before:
                    cleanup.exchange_delete(ex.name)
            cleanup.close()
            raise translate_topology_error(exc) from exc
        finally:
            channel.close()
