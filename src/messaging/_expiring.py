"""A bounded, expiring, thread-safe map: the memory of context stores and deduplicators."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringMap(Generic[V]):
    """Keys expire ``ttl`` seconds after they were set; past ``max_entries`` the oldest go.

    Entries are kept in insertion order, which with one TTL per map is expiry
    order, so expiring stops at the first live entry (a shorter TTL behind a
    longer one expires late, never early). ``on_drop(key, reason)`` hears of
    every entry that goes unclaimed ("expired" or "evicted").
    """

    def __init__(
        self,
        max_entries: int,
        on_drop: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._on_drop = on_drop
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def set(self, key: str, value: V, ttl: float) -> None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            self._entries.pop(key, None)
            self._entries[key] = (now + ttl, value)
            while len(self._entries) > self.max_entries:
                evicted, _ = self._entries.popitem(last=False)
                self._dropped(evicted, "evicted")

    def pop(self, key: str) -> V | None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def __contains__(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            self._expire(now)
            return key in self._entries

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (expires, _) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[key]
            self._dropped(key, "expired")

    def _dropped(self, key: str, reason: str) -> None:
        if self._on_drop is not None:
            self._on_drop(key, reason)
