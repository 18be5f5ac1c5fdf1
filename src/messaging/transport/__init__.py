"""The seam to the broker: the only package that imports the AMQP client."""

from messaging.transport import octets
from messaging.transport.base import Delivery, Properties
from messaging.transport.channels import ChannelManager, ManagedChannel, declare_topology
from messaging.transport.connection import ConnectionHealth, SupervisedConnection
from messaging.transport.errors import CONNECTION_LOST
from messaging.transport.inspect import BrokerInspector, QueueInfo

# Before any connection exists: a short string that is not UTF-8 must never
# make the frame reader drop the connection (see messaging.transport.octets).
octets.install()

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
