"""A subscriber's queue and consumer, and what it knows about one delivery.

:class:`Consumer` owns a subscriber's topology, its consumer on a channel,
decoding (and the checks a message must pass), the properties dict handlers
see, and the per-message metrics, log context and trace span. What happens to
each delivery, in order, is :mod:`messaging.aio.pipeline`; where failed
messages go, :mod:`messaging.aio.failures`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.options import SubscriberOptions
from messaging.aio.pool import AsyncConnectionPool
from messaging.errors import (
    ConfigurationError,
    ConnectionFailedError,
    DecodeError,
    PoisonMessageError,
    RejectedMessageError,
    UnknownRoutingKeyError,
)
from messaging.headers import (
    ATTEMPTS,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    without_bus_headers,
)
from messaging.ops import logcontext, tracing
from messaging.ops.metrics import ConsumerMetrics
from messaging.serialization import CONTENT_TYPE, deserialize
from messaging.topology import (
    QueueType,
    queue_limit_arguments,
    subscriber_topology,
)
from messaging.transport import (
    Channel,
    ConnectionLost,
    Delivery,
    DeliveryCallback,
    InlineCallback,
    Inspector,
)
from messaging.wiretext import foreign_fields, is_foreign

log = logging.getLogger("messaging.subscriber")


MessageClassLookup = Callable[[str], "type[ProtoMessage] | None"]
AcceptedTypes = Callable[[type[ProtoMessage]], Collection[str]]
"""For a message class, the ``type`` values taken for it besides its own full name."""
Handling = tuple[logcontext.Bound, Any, float]


def came_through_the_bus(delivery: Delivery) -> bool:
    """Delivered to the work queue by name: the bus's own retry or redelivery-count path.

    Both reach the queue through the default exchange (a delay queue
    dead-letters there; a recounted copy is published there). What senders
    publish arrives through the events exchange. Who else may publish to the
    default exchange is a matter of vhost permissions (README, "Who may write
    where").
    """
    return not delivery.exchange


def headers_of(delivery: Delivery) -> dict[str, Any]:
    """The message's headers as the bus believes them: a sender's ``x-chimera-*`` dropped."""
    headers = delivery.properties.headers
    if not headers:
        return {}
    if came_through_the_bus(delivery):
        return dict(headers)
    return without_bus_headers(headers)


def routing_key_of(delivery: Delivery) -> str:
    """The key the message was published with, also after a retry through a delay queue."""
    if came_through_the_bus(delivery):
        headers = delivery.properties.headers
        original = headers.get(ORIGINAL_ROUTING_KEY) if headers else None
        if original:
            return str(original)
    return delivery.routing_key


def delivery_properties(delivery: Delivery) -> dict[str, Any]:
    """The properties dict handlers receive."""
    props = delivery.properties
    headers = headers_of(delivery)
    return {
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "message_id": props.message_id,
        "routing_key": routing_key_of(delivery),
        "exchange": headers.get(ORIGINAL_EXCHANGE) or delivery.exchange,
        "headers": headers,
        "attempt": _int(headers.get(ATTEMPTS)) + 1,
        "redelivered": delivery.redelivered,
        "timestamp": props.timestamp,
        "type": props.message_type,
        "content_type": props.content_type,
        "app_id": props.app_id,
        "delivery_tag": delivery.delivery_tag,
    }


class Consumer:
    """One subscriber's queue, bindings and consumer, and how deliveries end."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        options: SubscriberOptions,
        message_class: MessageClassLookup,
        accepted_types: AcceptedTypes | None = None,
    ) -> None:
        self.pool = pool
        self.options = options
        self.agent_name = options.agent_name
        self.exchange_name = options.exchange_name
        self.queue_name = options.queue
        self.routing_keys = options.routing_keys
        self.prefetch_count = options.prefetch_count
        self.retry_delays = options.retry_delays
        self.permanent_errors: tuple[type[BaseException], ...] = (
            DecodeError,
            PoisonMessageError,
            RejectedMessageError,
            *options.permanent_errors,
        )
        self.max_redeliveries = options.max_redeliveries
        self.queue_type: QueueType = options.queue_type or pool.config.queue_type
        self.declare = options.declare
        self.topology = subscriber_topology(
            self.exchange_name,
            self.queue_name,
            self.routing_keys,
            retry_delays=self.retry_delays,
            queue_arguments=queue_limit_arguments(
                options.max_length,
                options.max_length_bytes,
                options.overflow,
                queue_type=self.queue_type,
            ),
            queue_type=self.queue_type,
            delivery_limit=self.max_redeliveries,
            single_active_consumer=options.single_active_consumer,
        )
        self._message_class = message_class
        self._accepted_types = accepted_types
        self._accepted: dict[type[ProtoMessage], frozenset[str]] = {}
        self.metrics = ConsumerMetrics(self.agent_name, self.queue_name)
        self._channel: Channel | None = None
        self._consumer_key: str | None = None
        self._inspector: Inspector | None = None

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            self._channel = self.pool.consuming.channel(
                f"consume:{self.queue_name}", prefetch=self.prefetch_count
            )
        return self._channel

    @property
    def counts_redeliveries(self) -> bool:
        """Whether the bus counts redeliveries itself (:meth:`recount`).

        Quorum queues count them in the broker (``x-delivery-limit``), which
        dead-letters a message past the limit with no help from us.
        """
        return self.max_redeliveries is not None and self.queue_type == "classic"

    @property
    def open_channel(self) -> Channel | None:
        """The channel deliveries are settled on, without making one; None once closed
        (its deliveries went back to the queue: nothing is left to settle)."""
        return self._channel

    @property
    def generation(self) -> int:
        return self.channel.generation

    @property
    def is_consuming(self) -> bool:
        """True while our consumer is attached to an open channel."""
        return self._consumer_key is not None and self.channel.is_consuming(self._consumer_key)

    async def broker_consumer_count(self) -> int:
        """How many consumers the broker counts on our queue (not just our own flag).

        Asked on an inspection channel: if the queue was deleted, the broker's
        404 closes that channel, not the one we consume on.
        """
        if self._inspector is None:
            self._inspector = self.pool.consuming.inspector(f"inspect:{self.queue_name}")
        info = await self._inspector.queue(self.queue_name)
        return 0 if info is None else info.consumers

    @property
    def send_only(self) -> bool:
        """True for an agent built with ``routing_keys=[]``: it has no queue to consume."""
        return not self.routing_keys

    async def start(
        self, on_delivery: DeliveryCallback | InlineCallback, *, inline: bool = False
    ) -> None:
        """Declare the topology (all or nothing), or with ``declare=False`` check that it
        exists, and start consuming. ``inline=True``: ``on_delivery`` is a plain
        function that must not block, called on the reader without a Task each."""
        if self.send_only:
            raise ConfigurationError(
                f"agent {self.agent_name!r} is send-only (routing_keys=[]): it can publish, "
                f"publish_request and request, but has no queue to consume; give it "
                f"routing_keys to consume"
            )
        try:
            if self.declare:
                await self.channel.declare(self.topology)
            else:  # operator-managed topology: check, declare nothing
                await self.channel.verify(self.topology)
            self._consumer_key = await self.channel.consume(
                self.queue_name, on_delivery, inline=inline
            )
        except ConnectionLost as exc:
            raise ConnectionFailedError(
                f"{self.agent_name}: the connection was lost while starting to consume "
                f"{self.queue_name}: {exc}"
            ) from exc
        log.info(
            "%s consuming %s (bound to %s on %s, prefetch %d)",
            self.agent_name,
            self.queue_name,
            ", ".join(self.routing_keys),
            self.exchange_name,
            self.prefetch_count,
        )

    async def cancel(self) -> None:
        """Stop new deliveries; those in hand can still be settled."""
        key, self._consumer_key = self._consumer_key, None
        if key is not None and self._channel is not None:
            await self._channel.cancel(key)

    async def close(self) -> None:
        """Cancel and close the channel; unsettled deliveries go back to the queue."""
        await self.cancel()
        channel, self._channel = self._channel, None
        if channel is not None:
            await self.pool.consuming.release(channel)
        inspector, self._inspector = self._inspector, None
        if inspector is not None:
            await inspector.close()

    # -- per delivery (the hot path) ---------------------------------------

    def started(self, properties: dict[str, Any]) -> Handling:
        """Count the delivery, bind its ids for logging, open its trace span."""
        self.metrics.consumed.inc()
        return (
            logcontext.bind(properties),
            tracing.start_consume(properties, self.agent_name, self.queue_name),
            time.perf_counter(),
        )

    def finished(self, handling: Handling, error: BaseException | None) -> None:
        tokens, span, started = handling
        self.metrics.handler_seconds.observe(time.perf_counter() - started)
        if error is None:
            self.metrics.acked.inc()
        else:
            self.metrics.handler_error(error)
        tracing.end_consume(span, error)
        logcontext.unbind(tokens)

    def decode(self, delivery: Delivery) -> ProtoMessage:
        routing_key = routing_key_of(delivery)
        foreign = foreign_fields(delivery.properties)
        if is_foreign(routing_key):
            foreign.insert(0, "routing key")
        if foreign:
            raise DecodeError(
                f"{', '.join(foreign)}: not UTF-8 (or a timestamp out of range): AMQP lets a "
                f"sender write any octets there, but this bus takes only UTF-8 text (the "
                f"octets are kept in this dead letter)"
            )
        try:
            cls = self._message_class(routing_key)
        except KeyError:
            cls = None
        if cls is None:
            raise UnknownRoutingKeyError(
                f"{self.agent_name} has no message class for routing key {routing_key!r}"
            )
        props = delivery.properties
        content_type = props.content_type
        if content_type and content_type != CONTENT_TYPE:
            raise DecodeError(
                f"content type {content_type!r} on {routing_key!r}, expected {CONTENT_TYPE!r}: "
                f"the sender did not publish protobuf"
            )
        self._check_type(props.message_type, cls, routing_key, delivery.body)
        return deserialize(delivery.body, cls)

    def _check_type(
        self, sent: str | None, cls: type[ProtoMessage], routing_key: str, body: bytes
    ) -> None:
        """The ``type`` property must name ``cls`` (or a type the subscriber accepts for it).

        Protobuf decodes almost any bytes as almost any class, so the name is
        what tells a ``DataRequest`` from a ``QueryRequest``. Without a
        ``type`` (other clients leave it out) the body is all there is, and an
        empty one says nothing: it is taken only for a class without fields.
        """
        accepted = self._accepted.get(cls)
        if accepted is None:
            accepted = frozenset(
                (cls.DESCRIPTOR.full_name, *self._accepted_types(cls))
                if self._accepted_types is not None
                else (cls.DESCRIPTOR.full_name,)
            )
            self._accepted[cls] = accepted
        if sent:
            if sent not in accepted:
                raise DecodeError(
                    f"type {sent!r} on {routing_key!r}, but {self.agent_name} takes "
                    f"{' or '.join(map(repr, sorted(accepted)))} there: the sender published "
                    f"another message type"
                )
        elif not body and cls.DESCRIPTOR.fields:
            raise DecodeError(
                f"empty body and no type on {routing_key!r}: {cls.DESCRIPTOR.full_name} has "
                f"fields, and a message of another client with neither is not taken as one"
            )


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
