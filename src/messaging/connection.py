"""The README's ConnectionPool, for synchronous code."""

from __future__ import annotations

import asyncio

from messaging._portal import Portal
from messaging.aio.middleware import Middleware
from messaging.aio.pool import AsyncConnectionPool, PoolHealth
from messaging.config import RabbitMQConfig
from messaging.transport import Connection, Transport


class ConnectionPool:
    """Connections to RabbitMQ with automatic retry and exponential backoff.

    Connects lazily on first use; :meth:`connect` connects now. Bad credentials
    or an unknown vhost raise at once; an unreachable broker is retried
    ``max_retries`` times with delays growing from ``initial_retry_delay`` to at
    most ``max_retry_delay`` (jittered) before :class:`ConnectionFailedError`.
    After a drop, reconnecting goes on in the background.

    ``transport`` (keyword only) picks the broker instead of the config's URL:
    ``MemoryTransport(broker)`` for the in-process broker, ``AmqpTransport()``
    for RabbitMQ (see :class:`~messaging.aio.AsyncConnectionPool`).
    """

    def __init__(
        self,
        config: RabbitMQConfig | None = None,
        max_retries: int = 5,
        initial_retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.aio = AsyncConnectionPool(
            config, max_retries, initial_retry_delay, max_retry_delay, transport=transport
        )
        self._portal = Portal.get()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The IO thread's event loop, which runs :attr:`aio`."""
        return self._portal.loop

    @property
    def config(self) -> RabbitMQConfig:
        return self.aio.config

    @property
    def publishing(self) -> Connection:
        return self.aio.publishing

    @property
    def consuming(self) -> Connection:
        return self.aio.consuming

    @property
    def middlewares(self) -> tuple[Middleware, ...]:
        return self.aio.middlewares

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware`` for every publisher and subscriber of this pool, before their own."""
        return self.aio.use(middleware)

    def connect(self) -> None:
        self._portal.call(self.aio.connect())

    def health(self) -> PoolHealth:
        return self.aio.health()

    def close(self) -> None:
        self._portal.call(self.aio.close())

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
