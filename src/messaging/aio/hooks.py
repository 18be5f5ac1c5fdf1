"""Where operations attach to the core without the core importing them.

The core announces a few moments of a subscriber's life here; whoever watches
(the health endpoint in :mod:`messaging.ops.health`, wired up by the
``messaging`` package itself) registers a hook. The core therefore never
starts an HTTP server or imports anything from :mod:`messaging.ops` beyond
its counters, and a test can run the core with no hooks at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from messaging.aio.pool import AsyncConnectionPool


class Consuming(Protocol):
    """A subscriber or agent, sync or async, seen from outside."""

    @property
    def agent_name(self) -> str: ...

    @property
    def queue_name(self) -> str: ...

    @property
    def is_consuming(self) -> bool: ...


SubscriberStarted = Callable[["AsyncConnectionPool", Consuming], None]
"""Called on the pool's event loop once a subscriber's consumer is attached."""

SubscriberStopping = Callable[["AsyncConnectionPool", Consuming], Awaitable[None]]
"""Awaited on the pool's event loop when a subscriber's shutdown begins, before its
consumer is cancelled (its connections are still open)."""

_started: list[SubscriberStarted] = []
_stopping: list[SubscriberStopping] = []
log = logging.getLogger("messaging.hooks")


def on_subscriber_started(hook: SubscriberStarted) -> SubscriberStarted:
    """Call ``hook`` whenever a subscriber starts consuming (registering twice is once)."""
    if hook not in _started:
        _started.append(hook)
    return hook


def remove_subscriber_started(hook: SubscriberStarted) -> None:
    if hook in _started:
        _started.remove(hook)


def subscriber_started(pool: AsyncConnectionPool, subscriber: Consuming) -> None:
    """Announce ``subscriber``; runs on the pool's event loop. A hook's error propagates:
    a monitoring port asked for and not served must not pass silently."""
    for hook in tuple(_started):
        hook(pool, subscriber)


def on_subscriber_stopping(hook: SubscriberStopping) -> SubscriberStopping:
    """Await ``hook`` whenever a subscriber begins to stop (registering twice is once)."""
    if hook not in _stopping:
        _stopping.append(hook)
    return hook


def remove_subscriber_stopping(hook: SubscriberStopping) -> None:
    if hook in _stopping:
        _stopping.remove(hook)


async def subscriber_stopping(pool: AsyncConnectionPool, subscriber: Consuming) -> None:
    """Tell the hooks that ``subscriber`` is stopping; runs on the pool's event loop.

    Unlike a start hook's, an error here is logged and swallowed: nothing may
    keep a subscriber from stopping.
    """
    for hook in tuple(_stopping):
        try:
            await hook(pool, subscriber)
        except Exception:
            log.exception("a subscriber-stopping hook failed for %s", subscriber.agent_name)
