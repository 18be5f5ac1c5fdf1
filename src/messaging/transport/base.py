"""The seam between the bus and a broker: what the core and the CLI may use.

Everything above :mod:`messaging.transport` talks to a broker through the
Protocols here, never through a client library's types. Two transports sit
behind them: :mod:`messaging.transport.amqp` (RabbitMQ) and an in-process
broker. Each Protocol's docstrings say which semantics an implementation must
have; RabbitMQ's behaviour is the reference, and the conformance suite checks
both transports against it.

The hot path copies nothing: a delivery's body and properties are the
transport's own objects, only wrapped (see :class:`Delivery`).

Two numbers travel with every delivery: its ``delivery_tag`` (per channel,
from 1, increasing) and the ``generation`` of the channel it came on. A
:class:`Channel` is reopened after the broker or the network closes it, and
each reopening starts a new generation; settling a delivery names both, and a
settle for a generation that is gone is dropped (the broker has already
requeued that message), never sent on the new channel where the tag would mean
another message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from messaging.backoff import RetryPolicy
from messaging.config import BrokerNode, RabbitMQConfig
from messaging.topology import Topology


class ConnectionLost(ConnectionError):  # noqa: N818 (a condition, not a failure of ours)
    """The connection or channel went away under an operation; its outcome is unknown.

    Transports raise it (or ``TimeoutError``) instead of their client's own
    errors, so the core can tell "try again after the reconnect" from "the
    broker refused this" (a :class:`~messaging.errors.MessagingError`).
    Internal: never reaches a user of the public API.
    """


@dataclass(frozen=True)
class ConnectionHealth:
    """A snapshot of one connection's state, for health checks and metrics."""

    purpose: str
    connected: bool
    uptime: float
    """Seconds since the current connection opened; 0 when disconnected."""
    reconnects: int
    last_error: str | None
    blocked: bool
    """The broker has blocked publishing (a memory or disk alarm)."""
    node: str | None = None
    """``host:port`` of the broker node this connection is on; None when disconnected."""


@dataclass(frozen=True)
class QueueInfo:
    name: str
    messages: int
    """Messages ready for delivery (not those delivered and unacked)."""
    consumers: int


class MessageProperties(Protocol):
    """The AMQP basic properties of a message, read-only.

    The AMQP transport's deliveries carry the client's own properties object
    (which has these attributes); :class:`Properties` is the one the bus builds.
    """

    @property
    def content_type(self) -> str | None: ...
    @property
    def content_encoding(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, Any] | None: ...
    @property
    def delivery_mode(self) -> int | None: ...
    @property
    def priority(self) -> int | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def expiration(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...
    @property
    def message_type(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def app_id(self) -> str | None: ...
    @property
    def cluster_id(self) -> str | None: ...


@dataclass(slots=True)
class Properties:
    """Message properties the bus sends (AMQP names; ``message_type`` is AMQP ``type``)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    message_type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None

    @classmethod
    def copy_of(cls, props: MessageProperties, **changes: Any) -> Properties:
        """A copy of ``props`` with ``changes`` applied (the headers dict is shared unless
        replaced)."""
        copy = cls(
            props.content_type,
            props.content_encoding,
            dict(props.headers) if props.headers is not None else None,
            props.delivery_mode,
            props.priority,
            props.correlation_id,
            props.reply_to,
            props.expiration,
            props.message_id,
            props.timestamp,
            props.message_type,
            props.user_id,
            props.app_id,
            props.cluster_id,
        )
        for name, value in changes.items():
            setattr(copy, name, value)
        return copy


class Delivery(Protocol):
    """One message handed to a consumer (or returned by :meth:`Channel.get`).

    ``body`` and ``properties`` are the transport's own objects, not copies.
    ``generation`` is that of the channel the message came on, read when the
    transport handed it over: ``-1`` if that channel was already gone (the
    broker has requeued the message, so it must be neither handled nor settled).
    ``redelivered`` is the broker's flag: the message was delivered before and
    not acked (its consumer died, or it was requeued).
    """

    @property
    def body(self) -> bytes: ...
    @property
    def properties(self) -> MessageProperties: ...
    @property
    def delivery_tag(self) -> int: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def exchange(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def generation(self) -> int: ...


DeliveryCallback = Callable[[Delivery], Coroutine[Any, Any, None]]
"""Called once per delivery; each call runs as a task of its own, in delivery order."""
InlineCallback = Callable[[Delivery], None]
"""A callback that must not block (it queues the delivery, or completes a future):
called in delivery order on the transport's reader, without a task each."""
ReopenListener = Callable[[int], Awaitable[None]]


class Channel(Protocol):
    """One channel for one purpose, reopened and restored whenever it is lost.

    Semantics every transport must give:

    - Opens lazily, on first use. After the broker closes it (a channel error)
      or the connection drops, it reopens by itself, re-declares every topology
      :meth:`declare` declared, re-issues every consumer :meth:`consume`
      started, bumps :attr:`generation`, then calls the :meth:`on_reopen`
      listeners with the new generation.
    - With ``confirms`` (chosen when the connection made the channel),
      :meth:`publish` returns only once the broker confirmed the message.
    - With a ``prefetch``, at most that many deliveries are unacked at once.
    - Deliveries of one consumer are handed over in order; an unsettled delivery
      goes back to its queue (``redelivered`` set) when its channel closes.
    """

    @property
    def purpose(self) -> str: ...

    @property
    def generation(self) -> int:
        """Starts at 1 when first opened; +1 on every reopening."""
        ...

    def on_reopen(self, listener: ReopenListener) -> None:
        """Call ``listener(generation)`` after the channel was replaced and restored."""

    async def declare(self, topology: Topology) -> None:
        """Declare all of ``topology`` or none of it, and again after every reopening.

        A refusal (RabbitMQ's PRECONDITION_FAILED for differing arguments,
        say) raises :class:`~messaging.errors.TopologyError` and leaves
        nothing this call created behind; it never closes this channel.
        """

    async def verify(self, topology: Topology) -> None:
        """Check that ``topology``'s exchanges and queues exist, declaring nothing
        (``declare=False``); raises :class:`~messaging.errors.TopologyMissingError`
        naming what is missing. Bindings cannot be checked over AMQP."""

    async def bind_temporary_queue(self, exchange: str, routing_key: str) -> str:
        """Declare a server-named, exclusive, auto-deleted queue bound to ``exchange``
        with ``routing_key``; returns its name. It lives as long as the connection."""

    async def consume(
        self,
        queue: str,
        callback: DeliveryCallback | InlineCallback,
        *,
        exclusive: bool = False,
        no_ack: bool = False,
        inline: bool = False,
    ) -> str:
        """Start consuming ``queue``; returns a key that stays valid across reopenings.

        ``inline=True``: ``callback`` is an :data:`InlineCallback` (a plain function
        that must not block), called in delivery order without a task each.

        A consumer the broker cancels (its queue was deleted) is re-declared
        and re-issued after a pause; :meth:`is_consuming` is False meanwhile.
        """

    async def cancel(self, key: str) -> None:
        """Stop the consumer ``key``; deliveries already handed over can still be settled."""

    def is_consuming(self, key: str) -> bool:
        """True while the consumer ``key`` is attached to an open channel."""

    async def get(self, queue: str) -> Delivery | None:
        """One message of ``queue`` without a consumer (unacked), or None when it is empty."""

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

        Raises :class:`~messaging.errors.UnroutableMessageError` (mandatory
        and no queue bound: RabbitMQ's basic.return with NO_ROUTE),
        :class:`~messaging.errors.PublishNackedError` or another
        :class:`~messaging.errors.PublishError` when the broker refuses it.
        ``TimeoutError`` and :class:`ConnectionLost` leave the outcome open:
        the caller decides whether to send again. Opens the channel (waiting
        up to ``timeout`` for the connection) when needed.
        """

    def ack(self, delivery_tag: int, generation: int, *, multiple: bool = False) -> bool:
        """Ack on the channel that delivered the message; False (and nothing sent)
        when that generation is gone. ``multiple`` acks every unacked tag up to
        this one. Never waits: the frame is queued."""

    def nack(
        self, delivery_tag: int, generation: int, *, multiple: bool = False, requeue: bool = True
    ) -> bool:
        """As :meth:`ack`, but the message(s) go back to the queue (``requeue``) or
        are dead-lettered by the broker."""

    def reject(self, delivery_tag: int, generation: int, *, requeue: bool) -> bool:
        """As :meth:`nack` for one message: without ``requeue`` the broker dead-letters it
        (to the queue's ``x-dead-letter-exchange``, with an ``x-death`` header)."""

    async def replace(self, why: str) -> None:
        """Drop the current channel so the next use opens a fresh one (a new generation).

        The publisher calls it after a nack: RabbitMQ 3.10 can keep nacking every
        publish on a channel that published while a quorum queue elected a new
        leader. A transport whose channels cannot get stuck so may do nothing.
        """

    async def close(self) -> None:
        """Close for good; unsettled deliveries go back to their queues."""


class Inspector(Protocol):
    """Looks at the broker and tidies it, on a channel of its own.

    A question about something missing never disturbs a channel that consumes
    or publishes (in RabbitMQ a failed passive declare closes its channel).
    Failures raise :class:`~messaging.errors.ConnectionFailedError` or
    :class:`~messaging.errors.TopologyError`.
    """

    async def queue(self, name: str, timeout: float | None = None) -> QueueInfo | None:
        """Depth and consumer count of ``name``, or None when it does not exist."""

    async def exchange_exists(self, name: str, timeout: float | None = None) -> bool: ...

    async def delete_queue(self, name: str) -> int:
        """Delete ``name`` (a no-op when it is missing); returns the messages it held."""

    async def delete_exchange(self, name: str) -> None: ...

    async def purge_queue(self, name: str) -> int: ...

    async def close(self) -> None: ...


class Connection(Protocol):
    """One connection to the broker, kept alive, and the channels opened on it.

    Connects lazily; :meth:`connect` connects now, within the retry policy it
    was made with (bad credentials or an unknown vhost raise at once). After a
    drop it reconnects in the background for as long as it takes, and every
    channel restores itself.
    """

    @property
    def purpose(self) -> str: ...

    async def connect(self) -> None: ...

    def channel(
        self, purpose: str, *, confirms: bool = False, prefetch: int | None = None
    ) -> Channel:
        """A new channel (opened on first use)."""

    async def release(self, channel: Channel) -> None:
        """Close ``channel`` and forget it."""

    def inspector(self, purpose: str) -> Inspector:
        """An :class:`Inspector` on a channel of its own."""

    def health(self) -> ConnectionHealth: ...

    @property
    def node(self) -> BrokerNode | None:
        """The broker node this connection is on; None while disconnected (or in process)."""

    def header_excess(self, properties: MessageProperties, body_size: int) -> int:
        """Octets by which a message's content header (properties and headers) would
        exceed what one frame carries on this connection; 0 or less when it fits.

        AMQP cannot split a content header, and RabbitMQ closes the connection
        (FRAME_ERROR) for one larger than ``frame_max``: whoever adds headers to a
        message checks here first."""

    async def close(self) -> None:
        """Close every channel, then the connection."""


class Transport(Protocol):
    """Opens a pool's connections to one kind of broker.

    A pool picks one by its URL (``amqp://``, ``amqps://``: RabbitMQ;
    ``memory://``: the in-process broker), or is given one
    (``ConnectionPool(..., transport=MemoryTransport(broker))``).
    """

    def open_connection(
        self, config: RabbitMQConfig, policy: RetryPolicy, purpose: str
    ) -> Connection:
        """A :class:`Connection` for one ``purpose`` (publish, consume); it connects
        on first use, within ``policy``."""
        ...


__all__ = [
    "Channel",
    "Connection",
    "ConnectionHealth",
    "ConnectionLost",
    "Delivery",
    "DeliveryCallback",
    "InlineCallback",
    "Inspector",
    "MessageProperties",
    "Properties",
    "QueueInfo",
    "ReopenListener",
    "Transport",
]
