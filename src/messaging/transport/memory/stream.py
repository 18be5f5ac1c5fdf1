"""Reading a stream queue of the in-process broker (see :mod:`messaging.transport.stream`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from messaging.config import RabbitMQConfig
from messaging.errors import TopologyMissingError
from messaging.transport.memory.broker import get_broker
from messaging.transport.memory.errors import NotFoundError
from messaging.transport.memory.model import Delivery
from messaging.transport.stream_message import Offset, StreamMessage


async def read_memory_stream(
    config: RabbitMQConfig, stream: str, offset: Offset, *, idle: float, prefetch: int
) -> AsyncIterator[StreamMessage]:
    broker = get_broker(config.memory_broker or "")
    connection = broker.connect("stream-read")
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[Delivery] = asyncio.Queue()
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch)
        try:
            channel.queue_declare(stream, passive=True)
        except NotFoundError:
            raise TopologyMissingError(f"there is no stream {stream!r} on the broker") from None
        channel = connection.channel()  # the refusal above closed the first one on a miss
        channel.basic_qos(prefetch)

        def on_message(delivery: Delivery) -> None:  # with the broker's lock held: hand over
            loop.call_soon_threadsafe(arrived.put_nowait, delivery)

        channel.basic_consume(stream, on_message, arguments={"x-stream-offset": offset})
        while True:
            try:
                delivery = await asyncio.wait_for(arrived.get(), idle)
            except TimeoutError:
                return
            channel.basic_ack(delivery.delivery_tag)
            headers = delivery.properties.headers or {}
            yield StreamMessage(delivery.body, _offset_of(headers), delivery.properties.timestamp)
    finally:
        connection.close()


def _offset_of(headers: dict[str, Any]) -> int | None:
    value = headers.get("x-stream-offset")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
