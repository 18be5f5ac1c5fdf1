"""The seam to the broker: the only package that imports the AMQP client."""

from messaging.transport.channels import ChannelManager, ManagedChannel, declare_topology
from messaging.transport.connection import ConnectionHealth, SupervisedConnection

__all__ = [
    "ChannelManager",
    "ConnectionHealth",
    "ManagedChannel",
    "SupervisedConnection",
    "declare_topology",
]
