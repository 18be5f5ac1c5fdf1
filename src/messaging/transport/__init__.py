"""The seam to the broker: the only package that imports the AMQP client.

:mod:`messaging.transport.base` names what the core sees; the AMQP
implementation lives in :mod:`messaging.transport.amqp`.
"""

from messaging.transport.amqp.channels import ChannelManager, ManagedChannel, declare_topology
from messaging.transport.amqp.connection import SupervisedConnection
from messaging.transport.amqp.errors import CONNECTION_LOST
from messaging.transport.amqp.inspect import BrokerInspector, QueueInfo
from messaging.transport.base import ConnectionHealth, Delivery, Properties

__all__ = [
    "CONNECTION_LOST",
    "BrokerInspector",
    "ChannelManager",
    "ConnectionHealth",
    "Delivery",
    "ManagedChannel",
    "Properties",
    "QueueInfo",
    "SupervisedConnection",
    "declare_topology",
]
