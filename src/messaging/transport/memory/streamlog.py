"""A stream queue's log (``x-queue-type=stream``): append-only, read from any offset.

As on RabbitMQ: every message gets the next offset (from 0); a consumer says
where it starts with the ``x-stream-offset`` argument (``"first"``,
``"last"``, ``"next"``, a number, or a timestamp) and each delivery carries
its offset in the ``x-stream-offset`` header; acking only makes room under
the consumer's prefetch, since nothing is ever removed by a consumer.

Retention (``x-max-age``, ``x-max-length-bytes``) removes whole segments, the
oldest first, never the one being written, and is looked at when a segment is
full and a new one begins: RabbitMQ's rule, hence the advice to keep
``x-stream-max-segment-size-bytes`` small. Here a message published alone is
its own chunk, so ``"last"`` starts at the last message.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from messaging.transport.memory.errors import BrokerError, PreconditionFailedError
from messaging.transport.memory.model import Queued

DEFAULT_SEGMENT_BYTES = 500_000_000
"""RabbitMQ's default ``x-stream-max-segment-size-bytes``."""

_AGE = re.compile(r"^(\d+)(Y|M|D|h|m|s)$")
_AGE_SECONDS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def parse_max_age(value: str) -> float | None:
    """Seconds of an ``x-max-age`` such as ``"24h"`` or ``"7D"``; None when malformed."""
    match = _AGE.match(value)
    if match is None:
        return None
    return int(match[1]) * _AGE_SECONDS[match[2]]


class InternalError(BrokerError):
    """RabbitMQ's answer to an ``x-stream-offset`` it cannot read: 541, the connection closes."""

    reply_code = 541
    name = "INTERNAL_ERROR"

    @property
    def reply_text(self) -> str:
        return self.name


@dataclass(slots=True)
class Entry:
    offset: int
    timestamp: int
    """Milliseconds since the Unix epoch, on the broker's clock (RabbitMQ's resolution)."""
    queued: Queued
    size: int
    segment: int


class StreamLog:
    """The messages of one stream queue, with retention."""

    def __init__(
        self,
        *,
        max_age: float | None,
        max_bytes: int | None,
        segment_bytes: int | None,
        epoch: float,
    ) -> None:
        """``epoch``: the wall time at which the broker's clock read 0."""
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or DEFAULT_SEGMENT_BYTES
        self.entries: deque[Entry] = deque()
        self.next_offset = 0
        self.bytes = 0
        self._segment = 0
        self._segment_used = 0
        self._epoch = epoch  # a manual clock moves stream time too

    def wall(self, now: float) -> int:
        """The broker clock's ``now`` as Unix milliseconds."""
        return math.floor((self._epoch + now) * 1000)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def first_offset(self) -> int:
        return self.entries[0].offset if self.entries else self.next_offset

    def append(self, queued: Queued, now: float) -> Entry:
        size = len(queued.message.body)
        if self._segment_used and self._segment_used + size > self.segment_bytes:
            self._segment += 1
            self._segment_used = 0
            self._retain(now)
        entry = Entry(self.next_offset, self.wall(now), queued, size, self._segment)
        self.entries.append(entry)
        self.next_offset += 1
        self.bytes += size
        self._segment_used += size
        return entry

    def _retain(self, now: float) -> None:
        """Drop the oldest closed segments while the stream is too big or they are too old."""
        while self.entries and self.entries[0].segment < self._segment:
            segment = self.entries[0].segment
            in_segment = [e for e in self.entries if e.segment == segment]
            newest = in_segment[-1].timestamp
            too_old = self.max_age is not None and self.wall(now) - newest > self.max_age * 1000
            too_big = self.max_bytes is not None and self.bytes > self.max_bytes
            if not (too_old or too_big):
                return
            for _ in in_segment:
                dropped = self.entries.popleft()
                self.bytes -= dropped.size

    def at(self, offset: int) -> Entry | None:
        first = self.first_offset
        if offset < first or offset >= self.next_offset:
            return None
        return self.entries[offset - first]

    def start(self, queue: str, argument: Any) -> int:
        """Where a consumer with ``x-stream-offset`` = ``argument`` begins."""
        if argument is None or argument == "next":
            return self.next_offset
        if argument == "first":
            return self.first_offset
        if argument == "last":
            return self.entries[-1].offset if self.entries else self.next_offset
        if isinstance(argument, datetime):
            point = math.floor(argument.timestamp() * 1000)
            for entry in self.entries:
                if entry.timestamp >= point:
                    return entry.offset
            return self.next_offset
        if isinstance(argument, int) and not isinstance(argument, bool):
            if argument < 0:
                raise PreconditionFailedError(
                    f"invalid x-stream-offset {argument} for queue '{queue}' in vhost '/'"
                )
            return max(argument, self.first_offset)
        raise InternalError("INTERNAL_ERROR")
