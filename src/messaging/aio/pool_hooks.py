"""A hook called with every new connection pool: how the flight recorder attaches itself.

Apart from :mod:`messaging.aio.hooks` because the pool itself calls it (that
module names the pool's class for its own hooks).
"""

from __future__ import annotations

from collections.abc import Callable
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
