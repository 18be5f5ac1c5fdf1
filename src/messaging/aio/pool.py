"""The connections of one process: one for publishing, one for consuming."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from messaging.aio import pool_hooks
from messaging.aio.middleware import Middleware, check
from messaging.backoff import RetryPolicy
from messaging.config import RabbitMQConfig, load_config
from messaging.ops.metrics import POOLS
from messaging.transport import Connection, ConnectionHealth, Transport, open_connection


@dataclass(frozen=True)
class PoolHealth:
    publishing: ConnectionHealth
    consuming: ConnectionHealth

    @property
    def connected(self) -> bool:
        return self.publishing.connected and self.consuming.connected


class AsyncConnectionPool:
    """Connections to RabbitMQ with automatic retry and exponential backoff.

    Publishing and consuming get separate connections, as RabbitMQ advises:
    when the broker applies flow control to a publishing connection, consumers
    on the other connection keep draining the queues. Both connect lazily, on
    first use, and reconnect by themselves after a drop.

    ``transport`` picks the broker: by default the one the config's URL names
    (RabbitMQ, or the in-process broker for ``memory://``); given
    (``MemoryTransport(broker)``, ``AmqpTransport()``), that one. Anything
    that is not a transport raises :class:`~messaging.errors.ConfigurationError`.

    ``async with AsyncConnectionPool(...) as pool`` closes it on the way out.
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
        self.config = config if config is not None else load_config().rabbitmq
        self.policy = RetryPolicy(
            max_retries=max_retries, initial_delay=initial_retry_delay, max_delay=max_retry_delay
        )
        self.publishing: Connection = open_connection(
            self.config, self.policy, "publish", transport
        )
        self.consuming: Connection = open_connection(self.config, self.policy, "consume", transport)
        self.closed = False
        self.middlewares: tuple[Middleware, ...] = ()
        POOLS.track(self)
        pool_hooks.pool_created(self)  # the flight recorder, when RECORDER__ENABLED

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware`` for every publisher and subscriber of this pool, before their own.

        Subscribers take the pool's middlewares when they start consuming.
        """
        self.middlewares = (*self.middlewares, check(middleware))
        return middleware

    async def connect(self) -> None:
        """Open both connections now instead of on first use (fails fast on bad credentials)."""
        await self.publishing.connect()
        await self.consuming.connect()

    def health(self) -> PoolHealth:
        return PoolHealth(
            publishing=self.publishing.health(),
            consuming=self.consuming.health(),
        )

    async def close(self) -> None:
        await pool_hooks.pool_closing(self)  # the flight recorder writes what it holds
        self.closed = True
        for connection in (self.publishing, self.consuming):
            await connection.close()

    async def __aenter__(self) -> Self:
        """Nothing to open yet (both connections connect on first use)."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
