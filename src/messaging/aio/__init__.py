"""The asyncio API: the same bus, for code that runs its own event loop."""

from messaging.aio.agent import AsyncBaseAgent, current_delivery
from messaging.aio.envelope import Envelope, Outgoing
from messaging.aio.handlers import RequestContext
from messaging.aio.middleware import Middleware
from messaging.aio.pool import AsyncConnectionPool, PoolHealth
from messaging.aio.publisher import AsyncEventPublisher
from messaging.aio.rpc import Answer, Gathered
from messaging.aio.subscriber import AsyncEventSubscriber

__all__ = [
    "Answer",
    "AsyncBaseAgent",
    "AsyncConnectionPool",
    "AsyncEventPublisher",
    "AsyncEventSubscriber",
    "Envelope",
    "Gathered",
    "Middleware",
    "Outgoing",
    "PoolHealth",
    "RequestContext",
    "current_delivery",
]
