"""Reading the recorder's stream back: records, filtered, with a count of what was unreadable."""

from __future__ import annotations

from dataclasses import dataclass, field

from messaging.config import RabbitMQConfig
from messaging.recorder.record import Record, decode
from messaging.transport.stream import Offset, read_stream


@dataclass
class Reading:
    records: list[Record] = field(default_factory=list)
    skipped: int = 0
    """Records (or whole stream messages) that could not be decoded."""


async def read_records(
    config: RabbitMQConfig,
    stream: str,
    offset: Offset = "first",
    *,
    correlation_id: str | None = None,
    idle: float = 1.0,
) -> Reading:
    """Every record of ``stream`` from ``offset`` (of one conversation, if given), in order."""
    reading = Reading()
    async for message in read_stream(config, stream, offset, idle=idle):
        decoded = decode(message.body, message.offset)
        reading.skipped += decoded.skipped
        if correlation_id is None:
            reading.records.extend(decoded.records)
        else:
            reading.records.extend(r for r in decoded.records if r.correlation_id == correlation_id)
    return reading
