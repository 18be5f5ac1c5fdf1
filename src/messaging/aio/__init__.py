"""The asyncio API: the same bus, for code that runs its own event loop."""

from messaging.aio.agent import AsyncBaseAgent, current_delivery
from messaging.aio.envelope import Envelope, Outgoing
from messaging.aio.middleware import Middleware
from messaging.aio.pool import AsyncConnectionPool, PoolHealth
from messaging.aio.publisher import AsyncEventPublisher
from messaging.aio.subscriber import AsyncEventSubscriber

__all__ = [
    "AsyncBaseAgent",
    "AsyncConnectionPool",
    "AsyncEventPublisher",
    "AsyncEventSubscriber",
    "Envelope",
    "Middleware",
    "Outgoing",
    "PoolHealth",
    "current_delivery",
]
