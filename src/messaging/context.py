"""Workflow context kept between a request and its answer.

An agent that asks another agent something remembers why under the request's
correlation id; when the answer arrives, the context comes back with it. The
store is bounded and entries expire, so a request nobody answers costs memory
only until its TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

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
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Context]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def put(self, correlation_id: str, context: Context, ttl: float) -> None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            self._entries.pop(correlation_id, None)
            self._entries[correlation_id] = (now + ttl, context)
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                log.warning(
                    "workflow context store full (%d entries); dropped the oldest "
                    "[correlation_id=%s]",
                    self.max_entries,
                    evicted,
                )

    def pop(self, correlation_id: str) -> Context | None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._entries.pop(correlation_id, None)
        return None if entry is None else entry[1]

    def _expire(self, now: float) -> None:
        # Entries are kept in insertion order; with one TTL per agent that is
        # expiry order, so the scan stops at the first live entry. A shorter
        # TTL behind a longer one expires a little late, never early.
        entries = self._entries
        while entries:
            correlation_id, (expires, _) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[correlation_id]
            log.warning(
                "workflow context expired without an answer [correlation_id=%s]", correlation_id
            )
