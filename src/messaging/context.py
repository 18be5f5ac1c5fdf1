"""Workflow context kept between a request and its answer.

An agent that asks another agent something remembers why under the request's
correlation id; when the answer arrives, the context comes back with it. The
store is bounded and entries expire, so a request nobody answers costs memory
only until its TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from messaging._expiring import ExpiringMap

log = logging.getLogger("messaging.context")

Context = dict[str, Any]


class ContextStore(Protocol):
    """Where an agent keeps workflow context. Implementations must be thread-safe."""

    def put(self, correlation_id: str, context: Context, ttl: float) -> None: ...

    def pop(self, correlation_id: str) -> Context | None:
        """The context stored under ``correlation_id``, removed; None if absent or expired."""
        ...


class InMemoryContextStore:
    """A process-local :class:`ContextStore`: bounded, expiring, thread-safe."""

    def __init__(
        self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: ExpiringMap[Context] = ExpiringMap(max_entries, _log_drop, clock)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, correlation_id: str, context: Context, ttl: float) -> None:
        self._entries.set(correlation_id, context, ttl)

    def pop(self, correlation_id: str) -> Context | None:
        return self._entries.pop(correlation_id)


def _log_drop(correlation_id: str, reason: str) -> None:
    log.warning("workflow context %s without an answer [correlation_id=%s]", reason, correlation_id)
