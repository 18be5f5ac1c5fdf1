"""The seam to the broker.

:mod:`messaging.transport.base` says what the bus may use of a broker (small
Protocols: connection, channel, delivery, inspector); the layers above import
only those names, from here. :mod:`messaging.transport.amqp` is RabbitMQ
behind them, the only package that imports the AMQP client;
:mod:`messaging.transport.memory` the in-process broker. A pool opens its
connections through a :class:`Transport`
(:mod:`messaging.transport.transports`): given, or picked by URL.
"""

from messaging.backoff import RetryPolicy
from messaging.config import RabbitMQConfig
from messaging.transport.amqp.manager import ChannelManager
from messaging.transport.base import (
    Channel,
    Connection,
    ConnectionHealth,
    ConnectionLost,
    Delivery,
    DeliveryCallback,
    InlineCallback,
    Inspector,
    MessageProperties,
    Properties,
    QueueInfo,
    Transport,
)
from messaging.transport.transports import (
    AmqpTransport,
    MemoryTransport,
    checked,
    transport_for,
)


def open_connection(
    config: RabbitMQConfig, policy: RetryPolicy, purpose: str, transport: Transport | None = None
) -> Connection:
    """A connection to the broker ``config`` names (or ``transport`` reaches), for one
    ``purpose`` (publish, consume).

    It connects on first use (or :meth:`~messaging.transport.base.Connection.connect`).
    """
    chosen = transport_for(config) if transport is None else checked(transport)
    return chosen.open_connection(config, policy, purpose)


__all__ = [
    "AmqpTransport",
    "Channel",
    "ChannelManager",
    "Connection",
    "ConnectionHealth",
    "ConnectionLost",
    "Delivery",
    "DeliveryCallback",
    "InlineCallback",
    "Inspector",
    "MemoryTransport",
    "MessageProperties",
    "Properties",
    "QueueInfo",
    "Transport",
    "open_connection",
    "transport_for",
]
