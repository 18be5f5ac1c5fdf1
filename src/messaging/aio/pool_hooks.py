"""Hooks called with every new connection pool, and as one closes: the flight recorder's.

Apart from :mod:`messaging.aio.hooks` because the pool itself calls it (that
module names the pool's class for its own hooks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from messaging.aio.middleware import Middleware
from messaging.transport import Connection


class NewPool(Protocol):
    """What a hook may do with a new pool: look at its middlewares, add one, publish."""

    @property
    def publishing(self) -> Connection: ...

    @property
    def middlewares(self) -> tuple[Middleware, ...]: ...

    def use(self, middleware: Middleware) -> Middleware: ...


PoolCreated = Callable[[NewPool], None]
"""Called on the thread that makes the pool, once it is complete."""

_created: list[PoolCreated] = []


def on_pool_created(hook: PoolCreated) -> PoolCreated:
    """Call ``hook`` with every new pool (registering twice is once)."""
    if hook not in _created:
        _created.append(hook)
    return hook


def remove_pool_created(hook: PoolCreated) -> None:
    if hook in _created:
        _created.remove(hook)


def pool_created(pool: NewPool) -> None:
    for hook in tuple(_created):
        hook(pool)


PoolClosing = Callable[[NewPool], Awaitable[None]]
"""Awaited on the pool's loop when it starts closing, while its connections are still open."""

_closing: list[PoolClosing] = []


def on_pool_closing(hook: PoolClosing) -> PoolClosing:
    """Await ``hook`` whenever a pool closes (registering twice is once)."""
    if hook not in _closing:
        _closing.append(hook)
    return hook


async def pool_closing(pool: NewPool) -> None:
    for hook in tuple(_closing):
        await hook(pool)
