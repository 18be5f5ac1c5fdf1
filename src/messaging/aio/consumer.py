"""What every subscriber does with a delivery, whoever runs its handler.

:class:`Consumer` owns a subscriber's topology, its consumer on a managed
channel, decoding, and the ack or dead-letter that ends each delivery. The
async subscriber runs handlers on the event loop; the sync one hands
deliveries to the caller's thread and settles them back through a
:class:`Settler`, which batches acks into one wake-up of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiormq.abc import DeliveredMessage
from google.protobuf.message import Message as ProtoMessage

from messaging.aio.pool import AsyncConnectionPool
from messaging.errors import ConfigurationError, DecodeError, UnknownRoutingKeyError
from messaging.routing import validate_binding_pattern
from messaging.serialization import deserialize
from messaging.topology import subscriber_topology, validate_name
from messaging.transport import ManagedChannel
from messaging.transport.channels import DeliveryCallback

log = logging.getLogger("messaging.subscriber")

MessageClassLookup = Callable[[str], "type[ProtoMessage] | None"]
DeliveryHandler = Callable[[DeliveredMessage, int], Awaitable[None]]


def delivery_properties(delivery: DeliveredMessage) -> dict[str, Any]:
    """The properties dict handlers receive."""
    props = delivery.header.properties
    frame: Any = delivery.delivery
    return {
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "message_id": props.message_id,
        "routing_key": frame.routing_key,
        "exchange": frame.exchange,
        "headers": dict(props.headers) if props.headers else {},
        "redelivered": bool(getattr(frame, "redelivered", False)),
        "timestamp": props.timestamp,
        "type": props.message_type,
        "content_type": props.content_type,
        "app_id": props.app_id,
        "delivery_tag": frame.delivery_tag,
    }


@dataclass(frozen=True)
class Outcome:
    delivery_tag: int
    generation: int
    ok: bool
    requeue: bool = False


class Consumer:
    """One subscriber's queue, bindings and consumer, and how deliveries end."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        agent_name: str,
        exchange_name: str,
        queue_name: str | None,
        routing_keys: Sequence[str],
        prefetch_count: int,
        message_class: MessageClassLookup,
    ) -> None:
        if isinstance(routing_keys, str):
            raise ConfigurationError(
                f"routing_keys must be a list of patterns, got the string {routing_keys!r}; "
                f"write [{routing_keys!r}]"
            )
        if not routing_keys:
            raise ConfigurationError("routing_keys is empty: give at least one pattern to bind")
        for pattern in routing_keys:
            validate_binding_pattern(pattern)
        if not isinstance(prefetch_count, int) or prefetch_count < 1:
            raise ConfigurationError(f"prefetch_count must be an int >= 1, got {prefetch_count!r}")
        validate_name("agent", agent_name)
        self.pool = pool
        self.agent_name = agent_name
        self.exchange_name = exchange_name
        self.queue_name = queue_name or agent_name
        self.routing_keys = tuple(routing_keys)
        self.prefetch_count = prefetch_count
        self.topology = subscriber_topology(exchange_name, self.queue_name, self.routing_keys)
        self._message_class = message_class
        self._channel: ManagedChannel | None = None
        self._consumer_key: str | None = None

    @property
    def channel(self) -> ManagedChannel:
        if self._channel is None:
            self._channel = self.pool.consuming.channel(
                f"consume:{self.queue_name}", prefetch=self.prefetch_count
            )
        return self._channel

    @property
    def generation(self) -> int:
        return self.channel.generation

    @property
    def is_consuming(self) -> bool:
        """True while our consumer is attached to an open channel."""
        return self._consumer_key is not None and self.channel.is_consuming(self._consumer_key)

    async def broker_consumer_count(self) -> int:
        """How many consumers the broker counts on our queue (not just our own flag)."""
        return await self.channel.consumer_count(self.queue_name)

    async def start(self, on_delivery: DeliveryCallback) -> None:
        """Declare the topology (all or nothing) and start consuming."""
        await self.channel.declare(self.topology)
        self._consumer_key = await self.channel.consume(self.queue_name, on_delivery)
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

    # -- per delivery (the hot path) ---------------------------------------

    def decode(self, delivery: DeliveredMessage) -> ProtoMessage:
        routing_key: str = delivery.delivery.routing_key or ""  # type: ignore[union-attr]
        try:
            cls = self._message_class(routing_key)
        except KeyError:
            cls = None
        if cls is None:
            raise UnknownRoutingKeyError(
                f"{self.agent_name} has no message class for routing key {routing_key!r}"
            )
        return deserialize(delivery.body, cls)

    def settle(self, outcome: Outcome) -> None:
        """Ack or reject on the loop; dropped when its channel is gone (the broker requeued it)."""
        channel = self.channel
        if outcome.ok:
            channel.ack(outcome.delivery_tag, outcome.generation)
        else:
            channel.reject(outcome.delivery_tag, outcome.generation, requeue=outcome.requeue)

    def log_failure(self, delivery: DeliveredMessage, exc: BaseException) -> None:
        props = delivery.header.properties
        routing_key = delivery.delivery.routing_key  # type: ignore[union-attr]
        kind = "undecodable message" if isinstance(exc, DecodeError) else "handler failed"
        log.error(
            "%s: %s on %s (message_id=%s), dead-lettering: %s: %s [correlation_id=%s]",
            self.agent_name,
            kind,
            routing_key,
            props.message_id,
            type(exc).__name__,
            exc,
            props.correlation_id,
            exc_info=not isinstance(exc, DecodeError),
        )


class Settler:
    """Carries acks from handler threads to the event loop, a batch per wake-up.

    ``in_order`` says the deliveries are handled one at a time in delivery
    order (the sync subscriber's single worker). Then every tag below a settled
    one is settled too, and a run of acks can go as one ``multiple=True`` ack.
    """

    def __init__(
        self, consumer: Consumer, loop: asyncio.AbstractEventLoop, *, in_order: bool
    ) -> None:
        self._consumer = consumer
        self._loop = loop
        self._in_order = in_order
        self._pending: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, outcome: Outcome) -> None:
        """Record an outcome; callable from any thread."""
        self._pending.append(outcome)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """Send what is pending. Runs on the loop."""
        with self._lock:
            self._scheduled = False
        pending = self._pending
        channel = self._consumer.channel
        run_tag: int | None = None
        run_generation = -1
        while pending:
            outcome = pending.popleft()
            if self._in_order and outcome.ok:
                if run_tag is not None and run_generation != outcome.generation:
                    channel.ack(run_tag, run_generation, multiple=True)
                run_tag, run_generation = outcome.delivery_tag, outcome.generation
                continue
            if run_tag is not None:
                channel.ack(run_tag, run_generation, multiple=True)
                run_tag = None
            self._consumer.settle(outcome)
        if run_tag is not None:
            channel.ack(run_tag, run_generation, multiple=True)
