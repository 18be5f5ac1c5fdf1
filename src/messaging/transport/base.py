"""The shapes of the AMQP client that the layers above see.

Deliveries and message properties are aiormq's and pamqp's own objects (the
hot path copies nothing), but they are named here, so that nothing outside
:mod:`messaging.transport` imports the client.
"""

from dataclasses import dataclass

from aiormq.abc import DeliveredMessage as Delivery
from pamqp.commands import Basic

Properties = Basic.Properties



@dataclass(frozen=True)
class ConnectionHealth:
    """A snapshot of one connection's state, for health checks and metrics."""

    purpose: str
    connected: bool
    uptime: float
    """Seconds since the current connection opened; 0 when disconnected."""
    reconnects: int
    last_error: str | None
    blocked: bool
    """The broker has blocked publishing (a memory or disk alarm)."""
    node: str | None = None
    """``host:port`` of the broker node this connection is on; None when disconnected."""


__all__ = ["ConnectionHealth", "Delivery", "Properties"]
