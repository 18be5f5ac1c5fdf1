"""Where operations attach to the core without the core importing them.

The core announces a few moments of a subscriber's life here; whoever watches
(the health endpoint in :mod:`messaging.ops.health`, wired up by the
``messaging`` package itself) registers a hook. The core therefore never
starts an HTTP server or imports anything from :mod:`messaging.ops` beyond
its counters, and a test can run the core with no hooks at all.
"""

from __future__ import annotations

from collections.abc import Callable
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

_started: list[SubscriberStarted] = []


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
