"""An AMQP 0-9-1 broker in the process: RabbitMQ's semantics for what the bus relies on.

Exchanges (direct, topic, fanout, headers, the default exchange), bindings,
queues with their arguments (dead-lettering, TTL, max length and overflow,
queue type), passive declares, the equivalence check on redeclare, prefetch,
ack/nack/reject with requeue and ``redelivered``, stream queues (offsets and
retention, :mod:`.streamlog`), dead-lettering with
``x-death``, per-queue and per-message TTL, mandatory returns, publisher
confirms, direct reply-to, consumer cancel notifications when a queue is
deleted, and unacked messages coming back when a channel or connection closes.
Where RabbitMQ refuses an operation this broker refuses it too, with the same
reply code and text, and closes the channel (see :mod:`.errors`).

Everything here is synchronous and guarded by one lock, so pools on different
threads and event loops can share a broker. Callbacks (deliveries, cancels,
closes) are called with that lock held: they must only hand the event over to
their own loop (``loop.call_soon_threadsafe``), never run user code.
Time comes from a :class:`~.clock.Clock`, so tests move TTLs forward at will.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from messaging.transport.memory.clock import Clock, Timer, system_clock
from messaging.transport.memory.errors import (
    AccessRefusedError,
    BrokerError,
    ChannelClosedError,
    ChannelError,
    CommandInvalidError,
    ConnectionClosedError,
    NotFoundError,
    NotImplementedFeatureError,
    PreconditionFailedError,
    ResourceLockedError,
)
from messaging.transport.memory.exchange import EXCHANGE_TYPES, Binding, Exchange, predeclared
from messaging.transport.memory.model import (
    Delivery,
    Message,
    PublishResult,
    Queued,
    Returned,
    stored_copy,
)
from messaging.transport.memory.settings import QueueSettings
from messaging.transport.memory.streamlog import StreamLog

log = logging.getLogger("messaging.memory")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
VHOST = "/"

DeliveryCallback = Callable[[Delivery], None]
CancelCallback = Callable[[str], None]
CloseCallback = Callable[[BrokerError | None], None]


# -- queues --------------------------------------------------------------------


@dataclass(eq=False)
class Consumer:
    tag: str
    queue: Queue
    channel: Channel
    no_ack: bool
    exclusive: bool
    prefetch: int
    """0: no limit."""
    on_message: DeliveryCallback
    on_cancel: CancelCallback | None
    unacked: int = 0
    cursor: int = 0
    """Streams: the offset of the next message to deliver."""

    @property
    def has_room(self) -> bool:
        return self.no_ack or self.prefetch == 0 or self.unacked < self.prefetch


@dataclass(eq=False)
class Queue:
    name: str
    durable: bool
    exclusive_owner: Connection | None
    auto_delete: bool
    arguments: dict[str, Any]
    settings: QueueSettings
    ready: deque[Queued] = field(default_factory=deque)
    consumers: list[Consumer] = field(default_factory=list)
    ready_bytes: int = 0
    deleted: bool = False
    had_consumers: bool = False
    timer: Timer | None = None
    next_consumer: int = 0
    stream: StreamLog | None = None
    """The log of a stream queue (``x-queue-type=stream``); None for the others."""

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None


@dataclass(frozen=True)
class DeclareOk:
    queue: str
    message_count: int
    consumer_count: int


@dataclass(frozen=True)
class QueueState:
    """A queue seen from outside: for tests and the inspector."""

    name: str
    ready: int
    unacked: int
    consumers: int
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class _Unacked:
    queue: Queue
    queued: Queued
    consumer: Consumer | None


# -- the broker ----------------------------------------------------------------


class MemoryBroker:
    """One virtual host's worth of exchanges and queues, shared by every connection to it."""

    def __init__(self, name: str = "", *, clock: Clock | None = None) -> None:
        self.name = name
        self.clock: Clock = clock if clock is not None else system_clock()
        self.epoch = time.time() - self.clock.now()
        """Wall time (Unix seconds) when the clock read 0: streams stamp messages with it."""
        self.lock = threading.RLock()
        self._exchanges = predeclared()
        self._queues: dict[str, Queue] = {}
        self._connections: dict[int, Connection] = {}
        self._reply_channels: dict[str, Channel] = {}
        self._ids = itertools.count(1)
        self._positions = itertools.count()

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name or '(default)'}: {len(self._queues)} queues>"

    # -- connections -------------------------------------------------------

    def connect(self, name: str = "") -> Connection:
        """A new client connection (never fails: there is no network to fail)."""
        with self.lock:
            connection = Connection(self, next(self._ids), name)
            self._connections[connection.id] = connection
            return connection

    @property
    def connections(self) -> list[Connection]:
        with self.lock:
            return list(self._connections.values())

    def close_connection(
        self, connection: Connection, reason: str = "closed by the broker"
    ) -> None:
        """Close ``connection`` from the broker's side, as ``rabbitmqctl close_connection`` does."""
        connection._close(ConnectionClosedError(f"Closed via management plugin: {reason}"))

    def close_all_connections(self, reason: str = "closed by the broker") -> int:
        """Close every client connection (a fault for tests); returns how many."""
        connections = self.connections
        for connection in connections:
            self.close_connection(connection, reason)
        return len(connections)

    # -- looking inside (tests, inspector) -----------------------------------

    def queue_state(self, name: str) -> QueueState | None:
        with self.lock:
            queue = self._queues.get(name)
            if queue is None:
                return None
            self._expire(queue)
            unacked = sum(
                1
                for connection in self._connections.values()
                for channel in connection.channels
                for entry in channel._unacked.values()
                if entry.queue is queue
            )
            ready = len(queue.stream) if queue.stream is not None else len(queue.ready)
            return QueueState(name, ready, unacked, len(queue.consumers), dict(queue.arguments))

    def wall_now(self) -> datetime:
        """Now on the broker's clock, as the time of day (what streams stamp messages with)."""
        return datetime.fromtimestamp(self.epoch + self.clock.now(), UTC)

    def queue_names(self) -> list[str]:
        with self.lock:
            return sorted(self._queues)

    def exchange_names(self) -> list[str]:
        with self.lock:
            return sorted(name for name in self._exchanges if name)

    def exchange_type(self, name: str) -> str | None:
        with self.lock:
            exchange = self._exchanges.get(name)
            return None if exchange is None else exchange.type

    def bindings(self, exchange: str) -> list[Binding]:
        with self.lock:
            found = self._exchanges.get(exchange)
            return [] if found is None else list(found.bindings)

    def peek(self, name: str) -> list[Message]:
        """The ready messages of queue ``name``, oldest first, left where they are."""
        with self.lock:
            queue = self._queues.get(name)
            if queue is None:
                raise NotFoundError(f"no queue '{name}' in vhost '/'")
            self._expire(queue)
            return [queued.message for queued in queue.ready]

    # -- routing and storing -------------------------------------------------

    def _exchange(self, name: str) -> Exchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            raise NotFoundError(f"no exchange '{name}' in vhost '/'")
        return exchange

    def _queue(self, name: str, connection: Connection | None = None) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            raise NotFoundError(f"no queue '{name}' in vhost '/'")
        if connection is not None and queue.exclusive_owner not in (None, connection):
            raise ResourceLockedError(
                f"cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It "
                f"could be originally declared on another connection or the exclusive "
                f"property value does not match that of the original declaration."
            )
        return queue

    def _route(self, exchange: Exchange, message: Message) -> list[Queue]:
        if exchange.name == "":
            names = [k for k in message.routing_keys if k in self._queues]
        else:
            names = []
            for key in message.routing_keys:
                names += exchange.route(key, message.properties.headers)
        return [self._queues[n] for n in dict.fromkeys(names) if n in self._queues]

    def _publish(self, message: Message, exchange: Exchange) -> tuple[bool, list[Queue]]:
        """Store ``message`` in every queue it routes to: (all accepted, the queues)."""
        targets = self._route(exchange, message)
        seen = {exchange.name}
        while not targets:
            # RabbitMQ's alternate exchange: what no binding takes goes there instead.
            alternate = exchange.arguments.get("alternate-exchange")
            if not isinstance(alternate, str) or alternate in seen:
                break
            found = self._exchanges.get(alternate)
            if found is None:
                break
            seen.add(alternate)
            exchange = found
            targets = self._route(exchange, message)
        accepted = True
        for queue in targets:
            accepted = self._enqueue(queue, message) and accepted
        return accepted, targets

    def _enqueue(self, queue: Queue, message: Message) -> bool:
        """Store a copy in ``queue``; False when its overflow policy refused it."""
        s = queue.settings
        if queue.stream is not None:
            self._append(queue, queue.stream, message)
            return True
        size = len(message.body)
        full = (s.max_length is not None and len(queue.ready) >= s.max_length) or (
            s.max_length_bytes is not None and queue.ready_bytes + size > s.max_length_bytes
        )
        now = self.clock.now()
        queued = Queued(
            message=Message(
                message.body,
                stored_copy(message.properties),
                message.exchange,
                list(message.routing_keys),
            ),
            expires_at=_expiry(now, s.message_ttl, message.properties.expiration),
            position=next(self._positions),
        )
        if full and s.overflow != "drop-head":
            if s.overflow == "reject-publish-dlx":
                self._dead_letter(queue, queued, "maxlen")
            return False
        queue.ready.append(queued)
        queue.ready_bytes += size
        if s.overflow == "drop-head":
            while queue.ready and (
                (s.max_length is not None and len(queue.ready) > s.max_length)
                or (s.max_length_bytes is not None and queue.ready_bytes > s.max_length_bytes)
            ):
                self._dead_letter(queue, self._pop(queue), "maxlen")
        self._dispatch(queue)
        return True

    def _append(self, queue: Queue, stream: StreamLog, message: Message) -> None:
        copy = Message(
            message.body,
            stored_copy(message.properties),
            message.exchange,
            list(message.routing_keys),
        )
        stream.append(Queued(copy, None, position=next(self._positions)), self.clock.now())
        self._dispatch(queue)

    def _pop(self, queue: Queue) -> Queued:
        queued = queue.ready.popleft()
        queue.ready_bytes -= len(queued.message.body)
        return queued

    def _requeue(self, queue: Queue, items: Iterable[Queued]) -> None:
        """Put returned messages back where they were in the queue, marked redelivered."""
        limit = queue.settings.delivery_limit
        for queued in sorted(items, key=lambda q: q.position, reverse=True):
            queued.redelivered = True
            queued.delivery_count += 1
            if limit is not None and queued.delivery_count > limit:
                # A quorum queue counts returns; past its limit the message dies.
                self._dead_letter(queue, queued, "delivery_limit")
                continue
            queue.ready_bytes += len(queued.message.body)
            if not queue.ready or queued.position < queue.ready[0].position:
                queue.ready.appendleft(queued)
                continue
            index = next(
                (i for i, q in enumerate(queue.ready) if q.position > queued.position),
                len(queue.ready),
            )
            queue.ready.insert(index, queued)

    # -- expiry --------------------------------------------------------------

    def _expire(self, queue: Queue) -> None:
        """Dead-letter (or drop) the expired messages at the head, and arm the next timer.

        As on RabbitMQ, only the head expires: a message with a shorter
        per-message TTL behind a longer one waits for it.
        """
        now = self.clock.now()
        while queue.ready:
            head = queue.ready[0]
            if head.expires_at is None or head.expires_at > now:
                break
            self._dead_letter(queue, self._pop(queue), "expired")
        self._arm(queue)

    def _arm(self, queue: Queue) -> None:
        deadline = queue.ready[0].expires_at if queue.ready else None
        timer = queue.timer
        if timer is not None and (deadline is None or timer.deadline != deadline):
            timer.cancel()
            queue.timer = timer = None
        if deadline is not None and timer is None and not queue.deleted:
            queue.timer = self.clock.call_at(deadline, lambda: self._on_timer(queue))

    def _on_timer(self, queue: Queue) -> None:
        with self.lock:
            queue.timer = None
            if not queue.deleted:
                self._expire(queue)
                self._dispatch(queue)

    # -- dead-lettering ------------------------------------------------------

    def _dead_letter(self, queue: Queue, queued: Queued, reason: str) -> None:
        """Republish to the queue's dead-letter exchange with an ``x-death`` entry."""
        s = queue.settings
        if s.dead_letter_exchange is None:
            return
        exchange = self._exchanges.get(s.dead_letter_exchange)
        if exchange is None:
            log.debug(
                "dead-letter exchange %r of %s missing: dropped", s.dead_letter_exchange, queue.name
            )
            return
        original = queued.message
        properties = stored_copy(original.properties)
        headers = dict(properties.headers or {})
        deaths = [dict(d) for d in headers.get("x-death") or [] if isinstance(d, Mapping)]
        same = next(
            (d for d in deaths if d.get("queue") == queue.name and d.get("reason") == reason), None
        )
        if same is not None:
            deaths.remove(same)
            same["count"] = int(same.get("count", 0)) + 1
            same["time"] = _now_stamp()
            entry = same
        else:
            entry = {
                "count": 1,
                "reason": reason,
                "queue": queue.name,
                "time": _now_stamp(),
                "exchange": original.exchange,
                "routing-keys": list(original.routing_keys),
            }
            if properties.expiration is not None:
                entry["original-expiration"] = properties.expiration
        deaths.insert(0, entry)
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-exchange", original.exchange)
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-reason", reason)
        properties.headers = headers
        properties.expiration = None
        keys = (
            [s.dead_letter_routing_key]
            if s.dead_letter_routing_key is not None
            else list(original.routing_keys)
        )
        message = Message(original.body, properties, exchange.name, keys)
        for target in self._route(exchange, message):
            if reason != "rejected" and _is_cycle(target.name, deaths):
                log.debug("dead-letter cycle through %s: message dropped", target.name)
                continue
            self._enqueue(target, message)

    # -- delivering ----------------------------------------------------------

    def _dispatch(self, queue: Queue) -> None:
        """Hand ready messages to consumers with room, round-robin, as RabbitMQ does."""
        if queue.stream is not None:
            self._dispatch_stream(queue, queue.stream)
            return
        self._expire(queue)
        while queue.ready and queue.consumers:
            consumer = self._next_consumer(queue)
            if consumer is None:
                break
            queued = self._pop(queue)
            consumer.channel._deliver(consumer, queue, queued)
            self._expire(queue)
        self._arm(queue)

    def _dispatch_stream(self, queue: Queue, stream: StreamLog) -> None:
        """Each consumer reads on from its own offset, as far as its prefetch lets it."""
        for consumer in list(queue.consumers):
            while consumer.has_room and consumer in queue.consumers:
                consumer.cursor = max(consumer.cursor, stream.first_offset)
                entry = stream.at(consumer.cursor)
                if entry is None:
                    break
                consumer.cursor += 1
                queued = entry.queued
                headers = {**(queued.message.properties.headers or {})}
                headers["x-stream-offset"] = entry.offset
                properties = stored_copy(queued.message.properties)
                properties.headers = headers
                delivered = Message(
                    queued.message.body,
                    properties,
                    queued.message.exchange,
                    queued.message.routing_keys,
                )
                consumer.channel._deliver(consumer, queue, Queued(delivered, None))

    def _next_consumer(self, queue: Queue) -> Consumer | None:
        if queue.settings.single_active_consumer:
            active = queue.consumers[0]  # the oldest attached; the next takes over when it goes
            return active if active.has_room else None
        count = len(queue.consumers)
        for step in range(count):
            index = (queue.next_consumer + step) % count
            consumer = queue.consumers[index]
            if consumer.has_room:
                queue.next_consumer = (index + 1) % count
                return consumer
        return None

    # -- deleting ------------------------------------------------------------

    def _delete_queue(self, queue: Queue) -> int:
        """Delete ``queue``: bindings go, consumers are told (basic.cancel). Returns its depth."""
        count = len(queue.ready)
        queue.deleted = True
        self._queues.pop(queue.name, None)
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        for exchange in list(self._exchanges.values()):
            before = len(exchange.bindings)
            exchange.bindings = [b for b in exchange.bindings if b.queue != queue.name]
            if exchange.auto_delete and before and not exchange.bindings:
                self._exchanges.pop(exchange.name, None)
        consumers, queue.consumers = queue.consumers, []
        for consumer in consumers:
            consumer.channel._consumers.pop(consumer.tag, None)
            if consumer.on_cancel is not None:
                consumer.on_cancel(consumer.tag)
        queue.ready.clear()
        queue.ready_bytes = 0
        return count

    def _forget_connection(self, connection: Connection) -> None:
        self._connections.pop(connection.id, None)
        for queue in list(self._queues.values()):
            if queue.exclusive_owner is connection:
                self._delete_queue(queue)


def _expiry(now: float, queue_ttl: float | None, expiration: str | None) -> float | None:
    ttls = [queue_ttl] if queue_ttl is not None else []
    if expiration is not None:
        try:
            ttls.append(max(0, int(expiration)) / 1000.0)
        except ValueError:
            raise PreconditionFailedError(f"invalid expiration '{expiration}'") from None
    return now + min(ttls) if ttls else None


def _is_cycle(queue: str, deaths: list[dict[str, Any]]) -> bool:
    """RabbitMQ drops a message dead-lettered back into a queue it died in, unless rejected.

    A cycle counts only when no death on the way (newest first, up to the
    earlier death in ``queue``) was a rejection: a client rejecting breaks it.
    """
    for death in deaths:
        if death.get("reason") == "rejected":
            return False
        if death.get("queue") == queue:
            return True
    return False


def _now_stamp() -> datetime:
    return datetime.now(tz=UTC).replace(microsecond=0)


# -- connections and channels ----------------------------------------------------


class Connection:
    """A client's connection to a :class:`MemoryBroker`: a set of channels."""

    def __init__(self, broker: MemoryBroker, id: int, name: str) -> None:
        self.broker = broker
        self.id = id
        self.name = name
        self.is_open = True
        self.close_reason: BrokerError | None = None
        self.close_callbacks: list[CloseCallback] = []
        self._channels: dict[int, Channel] = {}
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<memory Connection #{self.id} {self.name!r} {state}>"

    @property
    def channels(self) -> list[Channel]:
        return list(self._channels.values())

    def channel(self) -> Channel:
        with self.broker.lock:
            if not self.is_open:
                raise self.close_reason or ConnectionClosedError("connection closed")
            channel = Channel(self, next(self._numbers))
            self._channels[channel.number] = channel
            return channel

    def close(self) -> None:
        """Close from the client's side: channels close, unacked messages go back."""
        with self.broker.lock:
            if self.is_open:
                self._shutdown(None)

    def _close(self, reason: BrokerError) -> None:
        with self.broker.lock:
            if self.is_open:
                self._shutdown(reason)

    def _shutdown(self, reason: BrokerError | None) -> None:
        self.is_open = False
        self.close_reason = reason or ConnectionClosedError("connection closed by the client")
        for channel in list(self._channels.values()):
            channel._shutdown(reason, notify=reason is not None)
        self.broker._forget_connection(self)
        for callback in list(self.close_callbacks):
            callback(reason)


class Channel:
    """One AMQP channel: declares, publishes, consumes and settles, as on RabbitMQ.

    A refused operation raises a :class:`~.errors.ChannelError` and closes the
    channel, returning its unacked messages to their queues.
    """

    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.broker = connection.broker
        self.number = number
        self.is_open = True
        self.close_reason: BrokerError | None = None
        self.close_callbacks: list[CloseCallback] = []
        self.prefetch = 0
        self.confirming = False
        self._tags = itertools.count(1)
        self._unacked: dict[int, _Unacked] = {}
        self._consumers: dict[str, Consumer] = {}
        self._reply: Consumer | None = None
        self._reply_token: str | None = None

    def __repr__(self) -> str:
        return f"<memory Channel {self.connection.id}/{self.number}>"

    @property
    def consumer_tags(self) -> set[str]:
        with self.broker.lock:
            tags = set(self._consumers)
            if self._reply is not None:
                tags.add(self._reply.tag)
            return tags

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    # -- declaring -----------------------------------------------------------

    def exchange_declare(
        self,
        name: str,
        type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        with self._operation():
            broker = self.broker
            if passive:
                broker._exchange(name)
                return
            if name.startswith("amq.") or name == "":
                raise AccessRefusedError(
                    f"exchange name '{name}' contains reserved prefix 'amq.*'"
                    if name
                    else "operation not permitted on the default exchange"
                )
            if type not in EXCHANGE_TYPES:
                raise CommandInvalidError(f"invalid exchange type '{type}'")
            args = dict(arguments or {})
            existing = broker._exchanges.get(name)
            if existing is None:
                broker._exchanges[name] = Exchange(name, type, durable, auto_delete, internal, args)
                return
            _equivalent(
                "exchange",
                name,
                [
                    ("type", type, existing.type),
                    ("durable", durable, existing.durable),
                    ("auto_delete", auto_delete, existing.auto_delete),
                    ("internal", internal, existing.internal),
                ],
                args,
                existing.arguments,
            )

    def exchange_delete(self, name: str, *, if_unused: bool = False) -> None:
        with self._operation():
            broker = self.broker
            if name.startswith("amq.") or name == "":
                raise AccessRefusedError(
                    f"operation not permitted on exchange '{name}' in vhost '/'"
                )
            exchange = broker._exchanges.get(name)
            if exchange is None:
                return
            if if_unused and exchange.bindings:
                raise PreconditionFailedError(f"exchange '{name}' in vhost '/' in use")
            del broker._exchanges[name]

    def queue_declare(
        self,
        name: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> DeclareOk:
        with self._operation():
            broker = self.broker
            if passive:
                queue = broker._queue(name, self.connection)
                broker._expire(queue)
                ready = len(queue.stream) if queue.stream is not None else len(queue.ready)
                return DeclareOk(name, ready, len(queue.consumers))
            if name == "":
                name = f"amq.gen-{uuid.uuid4().hex[:22]}"
            elif name.startswith("amq."):
                raise AccessRefusedError(f"queue name '{name}' contains reserved prefix 'amq.*'")
            args = dict(arguments or {})
            existing = broker._queues.get(name)
            if existing is not None:
                broker._queue(name, self.connection)  # exclusive to another connection?
                _equivalent(
                    "queue",
                    name,
                    [
                        ("durable", durable, existing.durable),
                        ("exclusive", exclusive, existing.exclusive),
                        ("auto_delete", auto_delete, existing.auto_delete),
                    ],
                    args,
                    existing.arguments,
                )
                broker._expire(existing)
                return DeclareOk(name, len(existing.ready), len(existing.consumers))
            settings = QueueSettings.parse(name, args, durable, exclusive, auto_delete)
            broker._queues[name] = Queue(
                name,
                durable,
                self.connection if exclusive else None,
                auto_delete,
                args,
                settings,
                stream=_stream_log(settings, broker.epoch),
            )
            return DeclareOk(name, 0, 0)

    def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        with self._operation():
            broker = self.broker
            if exchange == "":
                raise AccessRefusedError(
                    f"operation not permitted on the default exchange (binding queue '{queue}')"
                )
            broker._queue(queue, self.connection)
            found = broker._exchange(exchange)
            binding = Binding(queue, routing_key, dict(arguments or {}))
            if binding not in found.bindings:
                found.bindings.append(binding)

    def queue_unbind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        with self._operation():
            broker = self.broker
            broker._queue(queue, self.connection)
            found = broker._exchange(exchange)
            binding = Binding(queue, routing_key, dict(arguments or {}))
            if binding in found.bindings:
                found.bindings.remove(binding)
            if found.auto_delete and not found.bindings:
                broker._exchanges.pop(found.name, None)

    def queue_delete(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete ``name``; a missing queue is not an error (RabbitMQ 3.x). Returns its depth."""
        with self._operation():
            broker = self.broker
            queue = broker._queues.get(name)
            if queue is None:
                return 0
            broker._queue(name, self.connection)
            if if_unused and queue.consumers:
                raise PreconditionFailedError(f"queue '{name}' in vhost '/' in use")
            if if_empty and queue.ready:
                raise PreconditionFailedError(f"queue '{name}' in vhost '/' is not empty")
            return broker._delete_queue(queue)

    def queue_purge(self, name: str) -> int:
        with self._operation():
            queue = self.broker._queue(name, self.connection)
            count = len(queue.ready)
            queue.ready.clear()
            queue.ready_bytes = 0
            self.broker._arm(queue)
            return count

    # -- publishing ----------------------------------------------------------

    def confirm_select(self) -> None:
        with self._operation():
            self.confirming = True

    def basic_publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: object | None = None,
        *,
        mandatory: bool = False,
    ) -> PublishResult:
        """Route and store a message; the result is what a confirming publisher hears."""
        with self._operation():
            broker = self.broker
            props = stored_copy(properties)
            if props.reply_to == DIRECT_REPLY_TO:
                if self._reply_token is None:
                    raise PreconditionFailedError("fast reply consumer does not exist")
                props.reply_to = f"{DIRECT_REPLY_TO}.{self._reply_token}"
            found = broker._exchange(exchange)
            if found.internal:
                raise AccessRefusedError(
                    f"cannot publish to internal exchange '{exchange}' in vhost '/'"
                )
            message = Message(bytes(body), props, exchange, [routing_key])
            if exchange == "" and routing_key.startswith(DIRECT_REPLY_TO + "."):
                routed = self._reply_to(routing_key, message)
                returned = None if routed or not mandatory else _returned(message)
                return PublishResult(acked=True, returned=returned)
            accepted, queues = broker._publish(message, found)
            returned = None if queues or not mandatory else _returned(message)
            return PublishResult(
                acked=accepted, returned=returned, routed_to=tuple(q.name for q in queues)
            )

    def _reply_to(self, address: str, message: Message) -> bool:
        token = address[len(DIRECT_REPLY_TO) + 1 :]
        channel = self.broker._reply_channels.get(token)
        if channel is None or channel._reply is None:
            return False
        consumer = channel._reply
        queued = Queued(message, None, position=next(self.broker._positions))
        channel._hand_over(consumer, queued, tag=next(channel._tags))
        return True

    # -- consuming -----------------------------------------------------------

    def basic_qos(self, prefetch_count: int, *, global_: bool = False) -> None:
        """Limit unacked deliveries per consumer started after this (``global=false``)."""
        with self._operation():
            if prefetch_count < 0 or prefetch_count > 65535:
                raise PreconditionFailedError(f"prefetch_count {prefetch_count} out of range")
            if global_:
                raise NotImplementedFeatureError("per-channel (global) prefetch is not supported")
            self.prefetch = prefetch_count

    def basic_consume(
        self,
        queue: str,
        on_message: DeliveryCallback,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        consumer_tag: str | None = None,
        on_cancel: CancelCallback | None = None,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """Start a consumer; ``on_cancel(tag)`` hears the broker cancel it (queue deleted).

        ``arguments``: ``x-stream-offset`` says where a consumer of a stream queue starts.
        """
        with self._operation():
            broker = self.broker
            tag = consumer_tag or f"amq.ctag-{uuid.uuid4().hex[:22]}"
            if tag in self._consumers or (self._reply is not None and self._reply.tag == tag):
                raise PreconditionFailedError(f"attempt to reuse consumer tag '{tag}'")
            if queue == DIRECT_REPLY_TO:
                if not no_ack:
                    raise PreconditionFailedError("reply consumer cannot acknowledge")
                if self._reply is not None:
                    raise PreconditionFailedError("reply consumer already set")
                reply_queue = Queue(DIRECT_REPLY_TO, False, None, False, {}, QueueSettings())
                self._reply = Consumer(tag, reply_queue, self, True, True, 0, on_message, on_cancel)
                self._reply_token = f"{self.connection.id}.{self.number}.{uuid.uuid4().hex}"
                broker._reply_channels[self._reply_token] = self
                return tag
            found = broker._queue(queue, self.connection)
            if any(c.exclusive for c in found.consumers) or (exclusive and found.consumers):
                raise AccessRefusedError(f"queue '{queue}' in vhost '/' in exclusive use")
            consumer = Consumer(
                tag, found, self, no_ack, exclusive, self.prefetch, on_message, on_cancel
            )
            if found.stream is not None:
                consumer.cursor = self._stream_start(found, found.stream, no_ack, arguments)
            self._consumers[tag] = consumer
            found.consumers.append(consumer)
            found.had_consumers = True
            broker._dispatch(found)
            return tag

    def _stream_start(
        self, queue: Queue, stream: StreamLog, no_ack: bool, arguments: Mapping[str, Any] | None
    ) -> int:
        """Where a new consumer of ``queue`` starts; refused as RabbitMQ refuses it."""
        where = f"queue '{queue.name}' in vhost '/'"
        if no_ack:
            raise NotImplementedFeatureError(
                f"automatic acknowledgement not supported by stream queues {where}"
            )
        if self.prefetch == 0:
            raise PreconditionFailedError(f"consumer prefetch count is not set for '{where}'")
        return stream.start(queue.name, (arguments or {}).get("x-stream-offset", "next"))

    def basic_cancel(self, consumer_tag: str) -> None:
        with self._operation():
            if self._reply is not None and self._reply.tag == consumer_tag:
                self._drop_reply()
                return
            consumer = self._consumers.pop(consumer_tag, None)
            if consumer is not None:
                self._detach(consumer)

    def basic_get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """Take the head of ``queue`` (None when it is empty)."""
        with self._operation():
            broker = self.broker
            found = broker._queue(queue, self.connection)
            if found.stream is not None:
                raise NotImplementedFeatureError(
                    f"basic.get not supported by stream queues queue '{queue}' in vhost '/'"
                )
            broker._expire(found)
            if not found.ready:
                return None
            queued = broker._pop(found)
            tag = next(self._tags)
            if not no_ack:
                self._unacked[tag] = _Unacked(found, queued, None)
            delivery = _delivery(queued, tag, None, self, found, message_count=len(found.ready))
            broker._arm(found)
            return delivery

    # -- settling ------------------------------------------------------------

    def basic_ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        with self._operation():
            self._settle(self._take(delivery_tag, multiple), "ack")

    def basic_nack(
        self, delivery_tag: int, *, multiple: bool = False, requeue: bool = True
    ) -> None:
        with self._operation():
            self._settle(self._take(delivery_tag, multiple), "requeue" if requeue else "dead")

    def basic_reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        with self._operation():
            self._settle(self._take(delivery_tag, False), "requeue" if requeue else "dead")

    def basic_recover(self) -> None:
        """Return every unacked message of this channel to its queue (requeue=true)."""
        with self._operation():
            self._settle(list(self._unacked), "requeue")

    def _take(self, tag: int, multiple: bool) -> list[int]:
        if multiple:
            tags = [t for t in self._unacked if t <= tag or tag == 0]
            if tag != 0 and tag not in self._unacked and not tags:
                raise PreconditionFailedError(f"unknown delivery tag {tag}")
            return tags
        if tag not in self._unacked:
            raise PreconditionFailedError(f"unknown delivery tag {tag}")
        return [tag]

    def _settle(self, tags: list[int], outcome: str) -> None:
        broker = self.broker
        if outcome == "dead" or (outcome == "requeue" and self.is_open):
            for tag in tags:
                queue = self._unacked[tag].queue
                if queue.stream is not None:
                    raise NotImplementedFeatureError(
                        f"basic.nack and basic.reject not supported by stream queues queue "
                        f"'{queue.name}' in vhost '/'"
                    )
        touched: dict[int, Queue] = {}
        returned: dict[int, list[Queued]] = {}
        for tag in tags:
            entry = self._unacked.pop(tag)
            if entry.consumer is not None:
                entry.consumer.unacked -= 1
            queue = entry.queue
            touched[id(queue)] = queue
            if queue.deleted or outcome == "ack" or queue.stream is not None:
                continue  # a stream keeps every message; an ack only frees prefetch room
            if outcome == "requeue":
                returned.setdefault(id(queue), []).append(entry.queued)
            else:
                broker._dead_letter(queue, entry.queued, "rejected")
        for key, items in returned.items():
            broker._requeue(touched[key], items)
        for queue in touched.values():
            if not queue.deleted:
                broker._dispatch(queue)

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Close from the client's side; unacked messages go back to their queues."""
        with self.broker.lock:
            if self.is_open:
                self._shutdown(None, notify=False)

    def _shutdown(self, reason: BrokerError | None, *, notify: bool) -> None:
        self.is_open = False
        self.close_reason = reason or ChannelClosedError("channel closed")
        self.connection._channels.pop(self.number, None)
        self._drop_reply()
        for consumer in list(self._consumers.values()):
            self._detach(consumer, dispatch=False)
        self._consumers.clear()
        self._settle(list(self._unacked), "requeue")
        if notify:
            for callback in list(self.close_callbacks):
                callback(reason)

    def _detach(self, consumer: Consumer, *, dispatch: bool = True) -> None:
        queue = consumer.queue
        if consumer in queue.consumers:
            queue.consumers.remove(consumer)
        if queue.auto_delete and queue.had_consumers and not queue.consumers and not queue.deleted:
            self.broker._delete_queue(queue)
        elif dispatch and not queue.deleted:
            self.broker._dispatch(queue)

    def _drop_reply(self) -> None:
        if self._reply_token is not None:
            self.broker._reply_channels.pop(self._reply_token, None)
        self._reply = None
        self._reply_token = None

    # -- machinery -----------------------------------------------------------

    def _operation(self) -> _Operation:
        return _Operation(self)

    def _deliver(self, consumer: Consumer, queue: Queue, queued: Queued) -> None:
        tag = next(self._tags)
        if not consumer.no_ack:
            self._unacked[tag] = _Unacked(queue, queued, consumer)
            consumer.unacked += 1
        self._hand_over(consumer, queued, tag=tag)

    def _hand_over(self, consumer: Consumer, queued: Queued, *, tag: int) -> None:
        delivery = _delivery(queued, tag, consumer.tag, self, consumer.queue)
        consumer.on_message(delivery)


class _Operation:
    """Runs one channel method under the broker lock; a refusal closes the channel."""

    __slots__ = ("channel",)

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def __enter__(self) -> None:
        self.channel.broker.lock.acquire()
        channel = self.channel
        if not channel.is_open:
            channel.broker.lock.release()
            connection = channel.connection
            if not connection.is_open:
                raise ConnectionClosedError(f"connection closed ({connection.close_reason})")
            raise ChannelClosedError(f"channel closed ({channel.close_reason})")

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if isinstance(exc, BrokerError) and self.channel.is_open:
                self.channel._shutdown(exc, notify=True)
                if not isinstance(exc, ChannelError):
                    # A hard error (503, 540) closes the whole connection, as on RabbitMQ.
                    self.channel.connection._shutdown(exc)
        finally:
            self.channel.broker.lock.release()


def _delivery(
    queued: Queued,
    tag: int,
    consumer_tag: str | None,
    channel: Channel,
    queue: Queue,
    *,
    message_count: int | None = None,
) -> Delivery:
    message = queued.message
    properties = stored_copy(message.properties)
    if queue.settings.queue_type == "quorum" and queued.delivery_count:
        properties.headers = {
            **(properties.headers or {}),
            "x-delivery-count": queued.delivery_count,
        }
    return Delivery(
        body=message.body,
        properties=properties,
        exchange=message.exchange,
        routing_key=message.routing_key,
        delivery_tag=tag,
        redelivered=queued.redelivered,
        consumer_tag=consumer_tag,
        channel=channel,
        message_count=message_count,
    )


def _stream_log(settings: QueueSettings, epoch: float) -> StreamLog | None:
    if settings.queue_type != "stream":
        return None
    return StreamLog(
        max_age=settings.max_age,
        max_bytes=settings.max_length_bytes,
        segment_bytes=settings.segment_bytes,
        epoch=epoch,
    )


def _returned(message: Message) -> Returned:
    return Returned(message.body, message.properties, message.exchange, message.routing_key)


def _equivalent(
    kind: str,
    name: str,
    flags: list[tuple[str, object, object]],
    wanted: Mapping[str, Any],
    current: Mapping[str, Any],
) -> None:
    """Raise PRECONDITION_FAILED, worded as RabbitMQ words it, on the first difference."""
    for flag, want, have in flags:
        if want != have:
            raise PreconditionFailedError(
                f"inequivalent arg '{flag}' for {kind} '{name}' in vhost '/': "
                f"received '{_flag(want)}' but current is '{_flag(have)}'"
            )
    for arg in sorted(set(wanted) | set(current)):
        if wanted.get(arg) != current.get(arg):
            raise PreconditionFailedError(
                f"inequivalent arg '{arg}' for {kind} '{name}' in vhost '/': "
                f"received {_value(wanted.get(arg))} but current is {_value(current.get(arg))}"
            )


def _flag(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _value(value: object) -> str:
    if value is None:
        return "none"
    kind = "longstr" if isinstance(value, str) else "long" if isinstance(value, int) else "table"
    return f"the value '{value}' of type '{kind}'"


# -- one broker per name, per process -----------------------------------------------

_brokers: dict[str, MemoryBroker] = {}
_registry_lock = threading.Lock()


def get_broker(name: str = "") -> MemoryBroker:
    """The process's broker called ``name`` (``memory://NAME``), created on first use."""
    with _registry_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = MemoryBroker(name)
        return broker


def install_broker(broker: MemoryBroker) -> MemoryBroker:
    """Make ``broker`` the one ``memory://<broker.name>`` reaches (a fresh one per test)."""
    with _registry_lock:
        _brokers[broker.name] = broker
    return broker


def remove_broker(name: str) -> None:
    with _registry_lock:
        _brokers.pop(name, None)


__all__ = [
    "DIRECT_REPLY_TO",
    "Binding",
    "Channel",
    "ChannelError",
    "Connection",
    "DeclareOk",
    "MemoryBroker",
    "QueueState",
    "get_broker",
    "install_broker",
    "remove_broker",
]
