"""The asyncio API: the same bus, for code that runs its own event loop."""

from messaging.aio.agent import AsyncBaseAgent, current_delivery
from messaging.aio.pool import AsyncConnectionPool, PoolHealth
from messaging.aio.publisher import AsyncEventPublisher
from messaging.aio.subscriber import AsyncEventSubscriber

__all__ = [
    "AsyncBaseAgent",
    "AsyncConnectionPool",
    "AsyncEventPublisher",
    "AsyncEventSubscriber",
    "PoolHealth",
    "current_delivery",
]
