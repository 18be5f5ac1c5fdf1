"""Discovery attached to the core through :mod:`messaging.aio.hooks`.

The ``messaging`` package registers :func:`announce` (a subscriber started
consuming) and :func:`withdraw` (it is stopping); both do nothing unless
``DISCOVERY__ENABLED`` is true.
"""

from __future__ import annotations

import logging
from typing import Any

from messaging.aio.hooks import Consuming
from messaging.aio.pool import AsyncConnectionPool
from messaging.config import DiscoveryConfig, load_config
from messaging.discovery.announcer import Announcer
from messaging.errors import ConfigurationError

log = logging.getLogger("messaging.discovery")

_announcers: dict[int, Announcer] = {}
"""By ``id()`` of the subscriber: running subscribers are alive, so ids are unique."""


def settings() -> DiscoveryConfig:
    try:
        return load_config().discovery
    except ConfigurationError as exc:  # the pool already read RABBITMQ__*: only ours is bad
        log.error("discovery is off: %s", exc)
        return DiscoveryConfig()


def announce(pool: AsyncConnectionPool, subscriber: Consuming) -> None:
    """Start announcing ``subscriber`` when ``DISCOVERY__ENABLED``; runs on the pool's loop."""
    config = settings()
    if not config.enabled or id(subscriber) in _announcers:
        return
    if getattr(subscriber, "send_only", False):
        return
    announcer = Announcer(pool, subscriber, exchange=config.exchange, interval=config.interval)
    key = id(subscriber)
    _announcers[key] = announcer
    announcer.start().add_done_callback(lambda _: _forget(key, announcer))


def _forget(key: int, announcer: Announcer) -> None:
    """Drop an announcer whose heartbeat ended by itself (its pool was closed unstopped)."""
    if _announcers.get(key) is announcer:
        del _announcers[key]


async def withdraw(pool: AsyncConnectionPool, subscriber: Consuming) -> None:
    """Withdraw ``subscriber``'s announcement, if it made one."""
    announcer = _announcers.pop(id(subscriber), None)
    if announcer is not None:
        await announcer.withdraw()


def announcer_of(subscriber: Any) -> Announcer | None:
    """The announcer of a running subscriber (for tests and the health of discovery)."""
    return _announcers.get(id(subscriber))


__all__ = ["announce", "announcer_of", "settings", "withdraw"]
