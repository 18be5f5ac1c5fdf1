"""Writes the buffer to the stream, in batches, from a task on the event loop.

It publishes on a channel of its own (on the pool's publishing connection),
one stream message per batch. Whatever goes wrong (the stream deleted, the
broker away, a write timing out) costs the records of that batch, counted and
logged by the :class:`~messaging.recorder.buffer.Buffer`; the next batch
declares the stream again on a fresh channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from messaging.recorder.buffer import WRITTEN, Buffer
from messaging.recorder.record import CONTENT_TYPE, Record, encode
from messaging.recorder.settings import RecorderSettings
from messaging.topology import QueueSpec, Topology
from messaging.transport import Channel, Connection, Properties

log = logging.getLogger("messaging.recorder")


def stream_topology(settings: RecorderSettings) -> Topology:
    return Topology(queues=(QueueSpec(settings.stream, arguments=settings.stream_arguments()),))


class Writer:
    """The background task that empties a :class:`Buffer` into the stream."""

    def __init__(
        self,
        buffer: Buffer,
        connection: Connection,
        settings: RecorderSettings,
        pool_closed: Callable[[], bool] = lambda: False,
    ) -> None:
        """``pool_closed``: True once the pool is closed; the writer then writes what it
        holds and stops (a recorder attached by ``RECORDER__ENABLED`` has no other owner)."""
        self._pool_closed = pool_closed
        self._buffer = buffer
        self._connection = connection
        self._settings = settings
        self._channel: Channel | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self.busy = False
        """True while a batch is being written."""

    def wake(self) -> None:
        """Write now rather than at the next interval (on the loop)."""
        self._wake.set()

    async def run(self) -> None:
        settings = self._settings
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), settings.flush_interval)
                self._wake.clear()
                closing = self._closing or self._pool_closed()
                while batch := self._buffer.take(settings.batch):
                    await self._write(batch)
                if closing:
                    return
        finally:
            await self._drop_channel()

    async def close(self, task: asyncio.Task[None], timeout: float) -> None:
        """Write what is buffered (within ``timeout``), then stop."""
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()

    async def _write(self, batch: list[Record]) -> None:
        self.busy = True
        try:
            await self._send(batch)
        finally:
            self.busy = False

    async def _send(self, batch: list[Record]) -> None:
        try:
            channel = await self._ready_channel()
            await channel.publish(
                encode(batch),
                "",
                self._settings.stream,
                Properties(
                    content_type=CONTENT_TYPE,
                    delivery_mode=2,
                    timestamp=datetime.now(UTC),
                ),
                mandatory=True,  # a stream deleted under us comes back as unroutable
                timeout=self._settings.write_timeout,
            )
        except asyncio.CancelledError:
            self._buffer.lost(len(batch), "stopped")
            raise
        except Exception as exc:
            self._buffer.lost(len(batch), f"{type(exc).__name__}: {exc}")
            await self._drop_channel()
            return
        WRITTEN.inc(len(batch))

    async def _ready_channel(self) -> Channel:
        channel = self._channel
        if channel is None:
            channel = self._connection.channel("recorder", confirms=True)
            try:
                await asyncio.wait_for(
                    channel.declare(stream_topology(self._settings)), self._settings.write_timeout
                )
            except BaseException:
                await self._connection.release(channel)
                raise
            self._channel = channel
        return channel

    async def _drop_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                await self._connection.release(channel)
            except Exception as exc:  # already gone with its connection
                log.debug("recorder channel release failed: %r", exc)
