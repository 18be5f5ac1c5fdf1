"""Channels that outlive the broker closing them.

A :class:`ManagedChannel` is what publishers and subscribers hold. When the
broker closes the channel under it (a channel error) or the connection drops,
it opens a new one, re-declares the topology it had declared, re-issues its
consumers, and bumps :attr:`ManagedChannel.generation`. Delivery tags belong to
one generation: an ack for an older one is dropped, never sent on the new
channel, where the tag would mean another message or close the channel.

Declarations go through :func:`declare_topology` on a throwaway channel, so
that a refused declaration (which makes the broker close the channel) never
costs a working channel, and a failure half-way removes what it had created.

A :class:`ManagedChannel` is the AMQP :class:`~messaging.transport.base.Channel`;
its deliveries are :class:`AmqpDelivery` objects, which hold the client's own
body and properties (nothing is copied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import aiormq
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from messaging.errors import (
    ClosedError,
    InvalidMessageError,
    MessagingError,
    TopologyMismatchError,
    TopologyMissingError,
)
from messaging.topology import Topology
from messaging.transport.amqp.connection import SupervisedConnection
from messaging.transport.amqp.errors import CONNECTION_LOST, REFUSED, translate
from messaging.transport.amqp.fastpublish import ChannelWriter, attach
from messaging.transport.amqp.inline import InlineConsumer, dispatch_inline
from messaging.transport.amqp.properties import amqp_properties
from messaging.transport.amqp.settle import ACK, NACK, REJECT, settle_frame
from messaging.transport.base import (
    ConnectionLost,
    DeliveryCallback,
    InlineCallback,
    MessageProperties,
    ReopenListener,
)

log = logging.getLogger("messaging.channel")

# What aio-pika raises when asked for a channel on a connection that is dead.
_UNUSABLE: tuple[type[BaseException], ...] = (RuntimeError, *CONNECTION_LOST)


class AmqpDelivery:
    """A delivery as :class:`~messaging.transport.base.Delivery`: the client's body
    and properties objects, and the frame's fields read once."""

    __slots__ = (
        "body",
        "delivery_tag",
        "exchange",
        "generation",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(self, message: DeliveredMessage, generation: int) -> None:
        frame: Any = message.delivery
        self.body: bytes = message.body
        self.properties: MessageProperties = message.header.properties
        self.delivery_tag: int = frame.delivery_tag
        self.redelivered: bool = bool(frame.redelivered)
        self.exchange: str = frame.exchange or ""
        self.routing_key: str = frame.routing_key or ""
        self.generation = generation

    def __repr__(self) -> str:
        return (
            f"<AmqpDelivery tag={self.delivery_tag} gen={self.generation} "
            f"{self.exchange!r}/{self.routing_key!r} message_id={self.properties.message_id!r}>"
        )


@dataclass
class _Consumer:
    queue: str
    callback: DeliveryCallback | InlineCallback
    exclusive: bool
    no_ack: bool
    inline: bool = False
    tag: str | None = None


class ManagedChannel:
    """One channel for one purpose, reopened and restored whenever it is lost."""

    def __init__(
        self,
        connection: SupervisedConnection,
        purpose: str,
        *,
        confirms: bool = False,
        prefetch: int | None = None,
        probe: bool = False,
    ) -> None:
        self.connection = connection
        self.purpose = purpose
        self.confirms = confirms
        self.prefetch = prefetch
        self.probe = probe
        """For passive declares: the broker closing it (NOT_FOUND) is an answer, not trouble."""
        self.generation = 0
        self._channel: AbstractChannel | None = None
        self._raw: aiormq.abc.AbstractChannel | None = None
        self._topologies: list[Topology] = []
        self._consumers: dict[str, _Consumer] = {}
        self._listeners: list[ReopenListener] = []
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self._settling: set[asyncio.Future[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        # The fast publish path for the current raw channel (None: aiormq's shape changed).
        self._writer: ChannelWriter | None = None
        self._writer_of: aiormq.abc.AbstractChannel | None = None
        connection.on_reconnect(self._restore)

    def on_reopen(self, listener: ReopenListener) -> None:
        """Call ``listener(generation)`` after the channel was replaced and restored."""
        self._listeners.append(listener)

    async def raw(self, timeout: float | None = None) -> aiormq.abc.AbstractChannel:
        """The open AMQP channel: the hot path's way in. Opens (and waits) if needed."""
        raw = self._raw
        if raw is not None and not raw.is_closed:
            return raw
        if self._closed:
            raise ClosedError(f"the {self.purpose} channel is closed")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._raw is not None and not self._raw.is_closed:
                return self._raw
            if timeout is None:
                await self.connection.get()
            else:
                await self.connection.wait_connected(timeout)
            try:
                # Opening is a few RPCs; on a connection that died half-way
                # they might wait for ever while holding this lock (and with
                # it every publish and the reconnect's restore).
                async with asyncio.timeout(self.connection.config.connect_timeout):
                    await self._open()
            except TimeoutError as exc:
                self.connection.lost(exc)
                raise ConnectionLost(
                    f"opening the {self.purpose} channel timed out; reconnecting"
                ) from exc
        assert self._raw is not None
        return self._raw

    async def _open(self) -> None:
        connection = await self.connection.get()
        try:
            channel = await connection.channel(
                publisher_confirms=self.confirms, on_return_raises=self.confirms
            )
        except _UNUSABLE as exc:
            # The connection died before its close callback told us.
            self.connection.lost(exc)
            raise ConnectionLost(f"the {self.connection.purpose} connection is gone") from exc
        if self.prefetch is not None:
            await channel.set_qos(prefetch_count=self.prefetch)
        raw = await channel.get_underlay_channel()
        dispatch_inline(raw)  # InlineConsumer callbacks run without a Task each
        for topology in self._topologies:
            await _declare(channel, topology)
        # The new generation starts before the first basic_consume: a delivery
        # that arrives while the other consumers are re-issued must carry it,
        # or it would be taken for a leftover of the old channel and skipped,
        # and a later multiple=True ack would settle it unhandled.
        first = self.generation == 0
        self.generation += 1
        self._channel, self._raw = channel, raw
        channel.close_callbacks.add(self._on_channel_closed)
        raw.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        for key, consumer in self._consumers.items():
            consumer.tag = await self._basic_consume(raw, key, consumer)
        if not first:
            log.info(
                "%s channel restored (generation %d, %d consumer(s))",
                self.purpose,
                self.generation,
                len(self._consumers),
            )
            for listener in list(self._listeners):
                await listener(self.generation)

    async def replace(self, why: str) -> None:
        """Close the current channel so that the next use opens a fresh one.

        For a channel that went bad without closing: after a quorum queue's
        leader fails over, RabbitMQ 3.10 can keep nacking every publish on a
        channel that published during the election, while a new channel
        publishes fine (measured on the cluster tests' kill -9 scenario).
        """
        channel, self._channel, self._raw = self._channel, None, None
        if channel is None or self._closed:
            return
        log.warning("%s channel replaced: %s", self.purpose, why)
        with contextlib.suppress(*CONNECTION_LOST):
            await channel.close()

    def _on_channel_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        if sender is not self._channel or self._closed:
            return
        self._raw = None
        if self.probe:
            # An inspector asked about something missing, and RabbitMQ answers
            # that by closing the channel: expected, nothing to restore (no
            # consumers, no topology); it reopens on the next question.
            log.debug("%s channel closed by the broker (%r)", self.purpose, exc)
            return
        if self.connection.is_connected:
            # The broker closed just this channel (a channel error); the
            # connection is fine, so restore now. After a connection drop the
            # connection's reconnect listener does it instead.
            log.warning("%s channel closed by the broker (%r); reopening", self.purpose, exc)
            asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        if self._closed:
            return
        try:
            await self.raw()
        except MessagingError as exc:
            log.error("%s channel could not be restored: %s", self.purpose, exc)
        except Exception as exc:  # a background task must not die silently
            # The connection dropped (again); its reconnect will call us again.
            log.warning("%s channel restore interrupted: %r", self.purpose, exc)

    # -- topology ----------------------------------------------------------

    async def declare(self, topology: Topology) -> None:
        """Declare ``topology`` now, and again on every channel this one becomes."""
        try:
            connection = await self.connection.get()
            await declare_topology(connection, topology)
        except (MessagingError, ConnectionLost):
            raise
        except CONNECTION_LOST as exc:
            raise ConnectionLost(f"{self.purpose}: lost while declaring: {exc!r}") from exc
        self._topologies.append(topology)

    async def verify(self, topology: Topology) -> None:
        """Check that ``topology``'s exchanges and queues exist; declare nothing.

        For operator-managed brokers (``declare=False``). Raises
        :class:`~messaging.errors.TopologyMissingError` naming everything
        missing. Bindings cannot be checked over AMQP; they are the operator's.
        """
        connection = await self.connection.get()
        existing = await _existing_names(connection, topology)
        missing = [
            f"{kind} {name!r}"
            for kind, name in (
                *(("exchange", e.name) for e in topology.exchanges),
                *(("queue", q.name) for q in topology.queues),
            )
            if f"{kind}:{name}" not in existing
        ]
        if missing:
            raise TopologyMissingError(
                f"declare=False, and the broker has no {', '.join(missing)}: whoever manages "
                f"the broker's topology (definitions file, policies) must create "
                f"{'it' if len(missing) == 1 else 'them'} first; nothing was declared"
            )

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
        """Start consuming; returns a key that stays valid across reopens.

        ``inline=True``: ``callback`` is a plain function that must not block;
        it is called on the channel's reader in delivery order, without the
        Task per delivery a coroutine callback costs (:mod:`.inline`).
        """
        key = f"{self.purpose}-{queue}-{len(self._consumers)}-{id(callback):x}"
        consumer = _Consumer(
            queue=queue, callback=callback, exclusive=exclusive, no_ack=no_ack, inline=inline
        )
        try:
            raw = await self.raw()
            consumer.tag = await self._basic_consume(raw, key, consumer)
        except (MessagingError, ConnectionLost):
            raise
        except REFUSED as exc:
            raise translate(exc, "declare") from exc
        except CONNECTION_LOST as exc:
            raise ConnectionLost(f"{self.purpose}: lost while consuming: {exc!r}") from exc
        self._consumers[key] = consumer
        return key

    async def _basic_consume(
        self, raw: aiormq.abc.AbstractChannel, key: str, consumer: _Consumer
    ) -> str:
        ok = await raw.basic_consume(
            consumer.queue,
            self._client_callback(consumer),
            exclusive=consumer.exclusive,
            no_ack=consumer.no_ack,
            consumer_tag=key,
        )
        return str(ok.consumer_tag)

    def _generation_of(self, message: DeliveredMessage) -> int:
        """The generation of the channel ``message`` came on, read as it is handed over:
        a delivery from just before a reopen is never taken for one of the new channel."""
        return self.generation if message.channel is self._raw else -1

    def _client_callback(self, consumer: _Consumer) -> Any:
        """What the client calls per delivery: our callback, given an :class:`AmqpDelivery`."""
        if consumer.inline:
            plain = cast(InlineCallback, consumer.callback)

            def hand_over(message: DeliveredMessage) -> None:
                plain(AmqpDelivery(message, self._generation_of(message)))

            return InlineConsumer(hand_over)
        callback = cast(DeliveryCallback, consumer.callback)

        def deliver(message: DeliveredMessage) -> Coroutine[Any, Any, None]:
            # The client runs what this returns as a Task of its own.
            return callback(AmqpDelivery(message, self._generation_of(message)))

        return deliver

    async def get(self, queue: str) -> AmqpDelivery | None:
        """One message of ``queue``, unacked (basic.get), or None when it is empty."""
        raw = await self.raw()
        try:
            message = await raw.basic_get(queue, no_ack=False)
        except CONNECTION_LOST as exc:
            raise translate(exc, "inspect") from exc
        if not isinstance(message.delivery, spec.Basic.GetOk):
            return None
        return AmqpDelivery(message, self.generation if raw is self._raw else -1)

    async def bind_temporary_queue(self, exchange: str, routing_key: str) -> str:
        raw = await self.raw()
        try:
            declared = await raw.queue_declare("", exclusive=True, auto_delete=True)
            queue = str(declared.queue)
            await raw.queue_bind(queue, exchange, routing_key=routing_key)
        except CONNECTION_LOST as exc:
            raise translate(exc, "declare") from exc
        return queue

    async def _on_consumer_cancelled(self, frame: Any) -> None:
        """The broker cancelled one of our consumers (its queue was deleted, say).

        A consumer that silently stops is how queues end up with nobody
        reading them; re-declare what this channel declared (the queue comes
        back with its arguments) and consume again, after a short pause so
        that repeated deletions cannot make this spin.
        """
        key = next((k for k, c in self._consumers.items() if c.tag == frame.consumer_tag), None)
        if key is None:
            return
        consumer = self._consumers[key]
        log.error(
            "%s: the broker cancelled the consumer on %s (queue deleted?); re-declaring "
            "and consuming again",
            self.purpose,
            consumer.queue,
        )
        task = asyncio.get_running_loop().create_task(self._reconsume(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconsume(self, key: str) -> None:
        await asyncio.sleep(1.0)
        consumer = self._consumers.get(key)
        channel, raw = self._channel, self._raw
        if self._closed or consumer is None or channel is None or raw is None or raw.is_closed:
            return  # stopped, or the channel went: its restore re-consumes
        if consumer.tag in getattr(raw, "consumers", {}):
            return
        try:
            for topology in self._topologies:
                await _declare(channel, topology)
            consumer.tag = await self._basic_consume(raw, key, consumer)
        except Exception as exc:  # the channel's own restore takes over
            log.warning("%s: consuming %s again failed: %r", self.purpose, consumer.queue, exc)
            return
        log.info("%s: consuming %s again", self.purpose, consumer.queue)

    def is_consuming(self, key: str) -> bool:
        """True while the consumer is attached to an open channel.

        The broker cancels a consumer whose queue is deleted; aiormq then
        forgets its tag, so this turns False.
        """
        consumer = self._consumers.get(key)
        raw = self._raw
        return (
            consumer is not None
            and raw is not None
            and not raw.is_closed
            and consumer.tag in getattr(raw, "consumers", {})
        )

    async def cancel(self, key: str) -> None:
        consumer = self._consumers.pop(key, None)
        raw = self._raw
        if consumer is None or consumer.tag is None or raw is None or raw.is_closed:
            return
        with contextlib.suppress(*CONNECTION_LOST):
            await raw.basic_cancel(consumer.tag)

    # -- publishing --------------------------------------------------------

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
        """One publish; with confirms on, returns once the broker confirmed it.

        Raises :class:`~messaging.errors.UnroutableMessageError`,
        :class:`~messaging.errors.PublishNackedError` or
        :class:`~messaging.errors.PublishError` when the broker refuses it, and
        ``TimeoutError`` or :class:`~messaging.transport.base.ConnectionLost`
        when the outcome is open: the caller decides whether to send again.
        """
        try:
            raw = self._raw
            if raw is None or raw.is_closed:
                raw = await self.raw(timeout=timeout)
            writer = self._writer_for(raw)
            if writer is not None and await writer.publish(
                body, exchange, routing_key, properties, mandatory, timeout
            ):
                return
            await raw.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=amqp_properties(properties),
                mandatory=mandatory,
                timeout=timeout,
            )
        except REFUSED as exc:
            raise translate(exc, "publish", exchange=exchange, routing_key=routing_key) from exc
        except amqp_errors.ConnectionFrameError as exc:
            if "frame_too_large" not in str(exc):
                raise ConnectionLost(f"{self.purpose}: {exc!r}") from exc
            # Sending it again would close the next connection the same way.
            raise InvalidMessageError(
                f"the broker closed the connection because the message's content header "
                f"(properties and headers) is larger than its frame_max "
                f"({self.connection.frame_max} octets); it was not stored. Send less in "
                f"headers (the body may be any size)"
            ) from exc
        except (TimeoutError, MessagingError, ConnectionLost):
            raise
        except CONNECTION_LOST as exc:
            raise ConnectionLost(f"{self.purpose}: {exc!r}") from exc

    # -- acknowledging -----------------------------------------------------

    def ack(self, delivery_tag: int, generation: int, *, multiple: bool = False) -> bool:
        """Ack on the channel that delivered the message; False when that channel is gone."""
        raw = self._raw
        if generation != self.generation or raw is None or raw.is_closed:
            return False
        # No reply comes for an ack: queue the frame and return.
        if not self._queue_settle(raw, ACK, delivery_tag, multiple):
            self._track(raw.basic_ack(delivery_tag, multiple=multiple, wait=False))
        return True

    def nack(
        self, delivery_tag: int, generation: int, *, multiple: bool = False, requeue: bool = True
    ) -> bool:
        raw = self._raw
        if generation != self.generation or raw is None or raw.is_closed:
            return False
        if not self._queue_settle(raw, NACK, delivery_tag, multiple | requeue << 1):
            self._track(
                raw.basic_nack(delivery_tag, multiple=multiple, requeue=requeue, wait=False)
            )
        return True

    def reject(self, delivery_tag: int, generation: int, *, requeue: bool) -> bool:
        raw = self._raw
        if generation != self.generation or raw is None or raw.is_closed:
            return False
        if not self._queue_settle(raw, REJECT, delivery_tag, requeue):
            self._track(raw.basic_reject(delivery_tag, requeue=requeue, wait=False))
        return True

    def _writer_for(self, raw: aiormq.abc.AbstractChannel) -> ChannelWriter | None:
        """The fast writer of ``raw`` (None when aiormq's shape does not allow one)."""
        if raw is not self._writer_of:
            self._writer, self._writer_of = attach(raw), raw
        return self._writer

    def _queue_settle(
        self, raw: aiormq.abc.AbstractChannel, method: int, tag: int, bits: int
    ) -> bool:
        """Queue an ack, nack or reject frame without a Task; False: take aiormq's path.
        Not while one of ours still waits in a Task: it must go first."""
        if self._settling:
            return False
        writer = self._writer_for(raw)
        return writer is not None and writer.queue_frame(
            settle_frame(raw.number, method, tag, bits)
        )

    def _track(self, coro: Awaitable[None]) -> None:
        # Hold a reference until done, or the task may be collected mid-flight.
        task = asyncio.ensure_future(coro)
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Future[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The channel closed under the frame: the broker requeues the message.
            log.debug("%s: settle not sent: %r", self.purpose, task.exception())

    async def close(self) -> None:
        """Close for good, after the acks and nacks already queued were written."""
        self._closed = True
        self.connection.remove_listener(self._restore)
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=1.0)
        channel, self._channel, self._raw = self._channel, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*CONNECTION_LOST):
                await channel.close()


async def declare_topology(connection: AbstractConnection, topology: Topology) -> None:
    """Declare all of ``topology`` or none of it.

    Runs on a throwaway channel. When the broker refuses a part (say, a queue
    that exists with other arguments), the exchanges and queues this call
    created are deleted again and the broker's refusal is raised as a
    :class:`~messaging.errors.TopologyError` that says what differs.
    """
    existing = await _existing_names(connection, topology)
    channel = await connection.channel()
    try:
        await _declare(channel, topology)
    except Exception as exc:
        error = translate(exc, "declare")
        if isinstance(error, TopologyMismatchError):
            error = await _explain_type_mismatch(connection, topology, error)
        await _remove_created(connection, topology, existing)
        raise error from exc
    finally:
        if not channel.is_closed:
            await channel.close()


_QUORUM_ONLY = ("x-queue-type", "x-dead-letter-strategy", "x-overflow", "x-delivery-limit")


async def _explain_type_mismatch(
    connection: AbstractConnection, topology: Topology, error: TopologyMismatchError
) -> TopologyMismatchError:
    """Tell "a classic queue cannot become quorum" apart from other differences.

    The broker reports the first differing argument it checks, which for a
    classic queue declared as quorum is often ``x-overflow``, not the type. If
    the same queue declares cleanly as classic (the broker changes nothing on
    an equivalent re-declare), the type is what differs.
    """
    spec = next((q for q in topology.queues if q.name == error.name), None)
    if spec is None or spec.arguments.get("x-queue-type") != "quorum":
        return error
    classic = {k: v for k, v in spec.arguments.items() if k not in _QUORUM_ONLY}
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    try:
        await raw.queue_declare(
            spec.name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=classic,
        )
    except aiormq.exceptions.AMQPError:
        return error
    finally:
        if not channel.is_closed:
            await channel.close()
    return TopologyMismatchError(
        "queue", spec.name, {"x-queue-type": ("quorum", "classic")}, error.broker_text
    )


async def _declare(channel: AbstractChannel, topology: Topology) -> None:
    raw = await channel.get_underlay_channel()
    for ex in topology.exchanges:
        await raw.exchange_declare(
            ex.name, exchange_type=ex.type, durable=ex.durable, arguments=dict(ex.arguments)
        )
    for q in topology.queues:
        await raw.queue_declare(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=dict(q.arguments),
        )
    for b in topology.bindings:
        await raw.queue_bind(b.queue, b.exchange, routing_key=b.routing_key)


async def _existing_names(connection: AbstractConnection, topology: Topology) -> set[str]:
    """Which of the topology's exchanges and queues exist already (passive declares).

    A failed passive declare closes its channel, hence one channel per check.
    """
    found: set[str] = set()
    checks: list[tuple[str, str]] = [("exchange", e.name) for e in topology.exchanges]
    checks += [("queue", q.name) for q in topology.queues if not q.exclusive]
    for kind, name in checks:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        try:
            if kind == "exchange":
                await raw.exchange_declare(name, passive=True)
            else:
                await raw.queue_declare(name, passive=True)
            found.add(f"{kind}:{name}")
        except aiormq.exceptions.ChannelNotFoundEntity:
            pass
        finally:
            if not channel.is_closed:
                await channel.close()
    return found


async def _remove_created(
    connection: AbstractConnection, topology: Topology, existing: set[str]
) -> None:
    if connection.is_closed:
        return
    channel = await connection.channel()
    raw = await channel.get_underlay_channel()
    try:
        for q in topology.queues:
            if f"queue:{q.name}" not in existing and not q.exclusive:
                await raw.queue_delete(q.name, if_unused=True, if_empty=True)
        for ex in topology.exchanges:
            if f"exchange:{ex.name}" not in existing:
                await raw.exchange_delete(ex.name, if_unused=True)
    except aiormq.exceptions.AMQPError as exc:
        log.warning("could not remove the partly declared topology: %r", exc)
    finally:
        if not channel.is_closed:
            await channel.close()
