"""Turning at-least-once into effectively-once: skip messages already handled.

The bus delivers at least once: after a dropped connection the broker
redelivers what was not acked, and a publish cut off mid-flight is sent again
with the same ``message_id``. A handler wrapped with :func:`idempotent`
handles each ``message_id`` once within the memory's TTL.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from messaging._expiring import ExpiringMap
from messaging.aio.envelope import Envelope
from messaging.aio.middleware import AsyncConsumeStep, ConsumeStep, Middleware
from messaging.errors import ConfigurationError

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


class Idempotent(Middleware):
    """Handle each ``message_id`` once: a message already handled is acked and skipped.

    An id is remembered only after the handler returned, so a failed attempt
    (retried or dead-lettered) does not block the next one. A store that waits
    on the network (Redis) is called off the event loop on the asyncio API.
    """

    def __init__(self, deduplicator: SeenMessages) -> None:
        self.deduplicator = deduplicator
        self._blocking = bool(getattr(deduplicator, "blocking", False))

    def consume(self, envelope: Envelope) -> ConsumeStep:
        if self.is_duplicate(envelope.properties):
            return
        yield
        self.remember(envelope.properties)

    async def consume_async(self, envelope: Envelope) -> AsyncConsumeStep:
        properties = envelope.properties
        if self._blocking:
            if await asyncio.to_thread(self.is_duplicate, properties):
                return
            yield
            await asyncio.to_thread(self.remember, properties)
        else:
            if self.is_duplicate(properties):
                return
            yield
            self.remember(properties)

    def is_duplicate(self, properties: Mapping[str, Any]) -> bool:
        message_id = properties.get("message_id")
        if message_id and self.deduplicator.seen(message_id):
            log.info(
                "duplicate of message %s skipped [correlation_id=%s]",
                message_id,
                properties.get("correlation_id"),
            )
            return True
        return False

    def remember(self, properties: Mapping[str, Any]) -> None:
        message_id = properties.get("message_id")
        if message_id:
            self.deduplicator.remember(message_id)


def idempotent(deduplicator: SeenMessages) -> Callable[[Handler], Handler]:
    """Decorate a handler to skip repeated message ids: :class:`Idempotent` as a decorator.

    Works on any handler whose last argument is the properties dict, sync or
    async: ``handle_message(self, message, properties)`` and a BaseAgent's
    ``route_message(self, message, routing_key, properties)`` alike. To cover
    every handler of an agent, pass ``middlewares=[Idempotent(...)]`` instead.
    """
    guard = Idempotent(deduplicator)

    def decorate(handler: Handler) -> Handler:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                properties = _properties_of(handler, args, kwargs)
                if guard._blocking:
                    if await asyncio.to_thread(guard.is_duplicate, properties):
                        return None
                elif guard.is_duplicate(properties):
                    return None
                result = await handler(*args, **kwargs)
                if guard._blocking:
                    await asyncio.to_thread(guard.remember, properties)
                else:
                    guard.remember(properties)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            properties = _properties_of(handler, args, kwargs)
            if guard.is_duplicate(properties):
                return None
            result = handler(*args, **kwargs)
            guard.remember(properties)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _properties_of(
    handler: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Mapping[str, Any]:
    properties = kwargs.get("properties", args[-1] if args else None)
    if not isinstance(properties, Mapping):
        raise ConfigurationError(
            f"@idempotent on {handler.__qualname__}: its last argument must be the message's "
            f"properties dict (as in handle_message and route_message), got {properties!r}"
        )
    return properties
