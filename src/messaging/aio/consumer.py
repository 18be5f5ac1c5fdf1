"""A subscriber's queue, its bindings and its consumer on a channel.

What happens to each delivery, in order, is :mod:`messaging.aio.pipeline`;
where failed messages go, :mod:`messaging.aio.failures`.
"""

from __future__ import annotations

import logging

from messaging.aio.codec import AcceptedTypes, MessageClassLookup
from messaging.aio.options import SubscriberOptions
from messaging.aio.pool import AsyncConnectionPool
from messaging.errors import (
    ConfigurationError,
    ConnectionFailedError,
    DecodeError,
    PoisonMessageError,
    RejectedMessageError,
)
from messaging.ops.metrics import ConsumerMetrics
from messaging.routing import validate_binding_pattern
from messaging.topology import (
    QueueType,
    Topology,
    queue_limit_arguments,
    subscriber_topology,
)
from messaging.transport import (
    Channel,
    ConnectionLost,
    DeliveryCallback,
    InlineCallback,
    Inspector,
)

log = logging.getLogger("messaging.subscriber")


class Consumer:
    """One subscriber's queue, bindings and consumer, and what its deliveries are decoded as."""

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
        self.topology = self._topology()
        self.message_class = message_class
        self.accepted_types = accepted_types
        self.metrics = ConsumerMetrics(self.agent_name, self.queue_name)
        self._channel: Channel | None = None
        self._consumer_key: str | None = None
        self._inspector: Inspector | None = None

    def _topology(self) -> Topology:
        """The queue, its bindings, its retry queues and its dead-lettering, as declared.

        Built in the constructor, so that a bad name or limit raises before anything is
        declared, and again when :meth:`bind` adds a pattern."""
        options = self.options
        return subscriber_topology(
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

    def bind(self, pattern: str) -> None:
        """Also consume messages whose routing key matches ``pattern`` (before starting)."""
        if self._consumer_key is not None:
            raise ConfigurationError(
                f"{self.agent_name} is consuming already: add handlers and bindings before "
                f"start_consuming()"
            )
        validate_binding_pattern(pattern)
        if pattern not in self.routing_keys:
            self.routing_keys = (*self.routing_keys, pattern)
            self.topology = self._topology()

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
