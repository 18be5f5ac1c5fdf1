"""Turning at-least-once into effectively-once: skip messages already handled.

The bus delivers at least once: after a dropped connection the broker
redelivers what was not acked, and a publish cut off mid-flight is sent again
with the same ``message_id``. A handler wrapped with :func:`idempotent`
handles each ``message_id`` once within the memory's TTL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from messaging._expiring import ExpiringMap

log = logging.getLogger("messaging.idempotency")

Handler = TypeVar("Handler", bound=Callable[..., Any])


class SeenMessages(Protocol):
    """What :func:`idempotent` needs: :class:`Deduplicator` (one process) or
    :class:`messaging.stores.RedisDeduplicator` (shared by replicas)."""

    def seen(self, message_id: str) -> bool: ...

    def remember(self, message_id: str) -> None: ...


class Deduplicator:
    """Remembers the ids of messages handled recently (bounded, expiring, thread-safe)."""

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._seen: ExpiringMap[bool] = ExpiringMap(max_entries, clock=clock)

    def seen(self, message_id: str) -> bool:
        return message_id in self._seen

    def remember(self, message_id: str) -> None:
        self._seen.set(message_id, True, self.ttl)


def idempotent(deduplicator: SeenMessages) -> Callable[[Handler], Handler]:
    """Decorate ``handle_message(self, message, properties)`` to skip repeated message ids.

    An id is remembered only after the handler returns, so a failed attempt
    (retried or dead-lettered) does not block the next one. Works on sync and
    async handlers alike.
    """

    def decorate(handler: Handler) -> Handler:
        import inspect

        def duplicate(properties: dict[str, Any]) -> bool:
            message_id = properties.get("message_id")
            if message_id and deduplicator.seen(message_id):
                log.info(
                    "duplicate of message %s skipped [correlation_id=%s]",
                    message_id,
                    properties.get("correlation_id"),
                )
                return True
            return False

        if inspect.iscoroutinefunction(handler):
            # A shared store (Redis) waits on the network: off the event loop.
            blocking = bool(getattr(deduplicator, "blocking", False))

            @functools.wraps(handler)
            async def async_wrapper(self: Any, message: Any, properties: dict[str, Any]) -> Any:
                if (
                    await asyncio.to_thread(duplicate, properties)
                    if blocking
                    else duplicate(properties)
                ):
                    return None
                result = await handler(self, message, properties)
                message_id = properties.get("message_id")
                if message_id and blocking:
                    await asyncio.to_thread(deduplicator.remember, message_id)
                elif message_id:
                    deduplicator.remember(message_id)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(handler)
        def wrapper(self: Any, message: Any, properties: dict[str, Any]) -> Any:
            if duplicate(properties):
                return None
            result = handler(self, message, properties)
            if properties.get("message_id"):
                deduplicator.remember(properties["message_id"])
            return result

        return wrapper  # type: ignore[return-value]

    return decorate
