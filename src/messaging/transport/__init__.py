"""The seam to the broker.

:mod:`messaging.transport.base` says what the bus may use of a broker (small
Protocols: connection, channel, delivery, inspector); the layers above import
only those names, from here. :mod:`messaging.transport.amqp` is RabbitMQ
behind them, the only package that imports the AMQP client.
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
)


def open_connection(config: RabbitMQConfig, policy: RetryPolicy, purpose: str) -> Connection:
    """A connection to the broker ``config`` names, for one ``purpose`` (publish, consume).

    It connects on first use (or :meth:`~messaging.transport.base.Connection.connect`).
    """
    if config.memory_broker is not None:
        from messaging.transport.memory.transport import MemoryConnection

        return MemoryConnection(config, policy, purpose)
    return ChannelManager.open(config, policy, purpose)


__all__ = [
    "Channel",
    "ChannelManager",
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
    "open_connection",
]
