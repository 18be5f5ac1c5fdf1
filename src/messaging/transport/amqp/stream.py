"""Reading a RabbitMQ stream queue from an offset (see :mod:`messaging.transport.stream`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aio_pika
import aiormq.exceptions as amqp_errors

from messaging.backoff import RetryPolicy
from messaging.config import RabbitMQConfig
from messaging.errors import TopologyMissingError
from messaging.transport.amqp.connection import SupervisedConnection
from messaging.transport.stream_message import Offset, StreamMessage

log = logging.getLogger("messaging.recorder")


START_ATTEMPTS = 4
"""How often a read is started before its error is raised. RabbitMQ 3.10 can fail a
consume on a stream created a moment before (its stream coordinator still electing a
leader: the channel crashes, the connection closes with 541 INTERNAL_ERROR)."""


async def read_amqp_stream(
    config: RabbitMQConfig, stream: str, offset: Offset, *, idle: float, prefetch: int
) -> AsyncIterator[StreamMessage]:
    for attempt in range(1, START_ATTEMPTS + 1):
        connection = SupervisedConnection(config, RetryPolicy(max_retries=1), "stream-read")
        try:
            queue, tag, arrived = await _start(connection, stream, offset, prefetch)
        except TopologyMissingError:
            await connection.close()
            raise
        except (amqp_errors.AMQPError, ConnectionError) as exc:
            await connection.close()
            if attempt == START_ATTEMPTS:
                raise
            log.info("reading stream %s failed to start (%r); trying again", stream, exc)
            await asyncio.sleep(0.2 * attempt)
            continue
        break
    try:
        try:
            while True:
                try:
                    message = await asyncio.wait_for(arrived.get(), idle)
                except TimeoutError:
                    return
                await message.ack()  # manual acks, as RabbitMQ requires; they move the credit
                yield StreamMessage(message.body, _offset_of(message.headers), message.timestamp)
        finally:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
    finally:
        await connection.close()


async def _start(
    connection: SupervisedConnection, stream: str, offset: Offset, prefetch: int
) -> tuple[aio_pika.abc.AbstractQueue, str, asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]]:
    raw = await connection.get()
    channel = await raw.channel()
    await channel.set_qos(prefetch_count=prefetch)  # RabbitMQ requires one for streams
    try:
        queue = await channel.declare_queue(stream, passive=True)
    except amqp_errors.ChannelNotFoundEntity:
        raise TopologyMissingError(f"there is no stream {stream!r} on the broker") from None
    arrived: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    tag = await queue.consume(arrived.put, arguments={"x-stream-offset": _argument(offset)})
    return queue, tag, arrived


def _argument(offset: Offset) -> Any:
    if isinstance(offset, datetime):
        return offset  # sent as an AMQP timestamp
    return offset


def _offset_of(headers: dict[str, Any]) -> int | None:
    value = headers.get("x-stream-offset")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
