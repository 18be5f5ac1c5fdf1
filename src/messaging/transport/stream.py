"""Reading a stream queue (``x-queue-type=stream``) from an offset, on either transport.

RabbitMQ serves a stream over AMQP 0-9-1 to a consumer with manual acks and a
prefetch, starting where its ``x-stream-offset`` argument says: ``"first"``,
``"last"`` (the last chunk), ``"next"`` (only what comes after), a numeric
offset, or a timestamp. A stream has no end: a reader stops once nothing new
arrived for ``idle`` seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from messaging.config import RabbitMQConfig
from messaging.transport.stream_message import Offset, StreamMessage


def read_stream(
    config: RabbitMQConfig,
    stream: str,
    offset: Offset = "first",
    *,
    idle: float = 1.0,
    prefetch: int = 200,
) -> AsyncIterator[StreamMessage]:
    """The messages of ``stream`` from ``offset`` on, until none came for ``idle`` seconds.

    Raises :class:`~messaging.errors.TopologyMissingError` when the stream does not exist.
    """
    if config.memory_broker is not None:
        from messaging.transport.memory.stream import read_memory_stream

        return read_memory_stream(config, stream, offset, idle=idle, prefetch=prefetch)
    from messaging.transport.amqp.stream import read_amqp_stream

    return read_amqp_stream(config, stream, offset, idle=idle, prefetch=prefetch)


__all__ = ["Offset", "StreamMessage", "read_stream"]
