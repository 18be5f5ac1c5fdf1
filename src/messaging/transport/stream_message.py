"""What a stream reader yields (:mod:`messaging.transport.stream`), for both transports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

Offset = str | int | datetime
"""``"first"``, ``"last"``, ``"next"``, a numeric offset or a point in time."""


@dataclass(frozen=True, slots=True)
class StreamMessage:
    body: bytes
    offset: int | None
    """The message's ``x-stream-offset``."""
    timestamp: datetime | None
