"""The seam to the broker: the only package that imports the AMQP client."""

from messaging.transport.base import Delivery, Properties
from messaging.transport.channels import ChannelManager, ManagedChannel, declare_topology
from messaging.transport.connection import ConnectionHealth, SupervisedConnection
from messaging.transport.errors import CONNECTION_LOST
from messaging.transport.inspect import BrokerInspector, QueueInfo

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
