"""The recorder's in-memory buffer: bounded, never blocking, losing the oldest when full."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from prometheus_client import Counter

from messaging.recorder.record import Record

log = logging.getLogger("messaging.recorder")

DROPPED = Counter(
    "chimera_recorder_records_dropped",
    "Flight-recorder records lost: the buffer was full, or the stream refused or missed a write.",
    ["reason"],
)
WRITTEN = Counter("chimera_recorder_records_written", "Flight-recorder records written.")

WARN_EVERY = 10.0
"""Seconds between two warnings about lost records (each says how many since the last)."""


class Buffer:
    """Records waiting to be written. ``add`` is safe from any thread and never waits.

    A full buffer drops its oldest record: the recorder being behind (or the
    stream being down) costs records, counted and logged, never a handler's time.
    """

    def __init__(self, size: int) -> None:
        self._records: deque[Record] = deque(maxlen=size)
        self._size = size
        self._lost = 0
        self._lost_lock = threading.Lock()
        self._warned_at = float("-inf")

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: Record) -> None:
        records = self._records
        if len(records) >= self._size:
            self.lost(1, "full")
        records.append(record)  # deque(maxlen) drops the oldest itself

    def take(self, most: int) -> list[Record]:
        records = self._records
        taken: list[Record] = []
        while records and len(taken) < most:
            try:
                taken.append(records.popleft())
            except IndexError:  # emptied by another taker meanwhile
                break
        return taken

    def lost(self, count: int, reason: str) -> None:
        """Count ``count`` lost records; warn at most every :data:`WARN_EVERY` seconds."""
        DROPPED.labels(reason).inc(count)
        now = time.monotonic()
        with self._lost_lock:
            self._lost += count
            if now - self._warned_at < WARN_EVERY:
                return
            lost, self._lost, self._warned_at = self._lost, 0, now
        log.warning(
            "flight recorder lost %d record(s) (latest reason: %s); handlers are not affected",
            lost,
            reason,
        )
