"""The flight recorder: a middleware that notes every publish and every handled delivery.

Noting is an append to a bounded in-memory buffer (no I/O, no lock held
across anything slow); a task on the event loop writes the buffer to a
RabbitMQ stream in batches (:mod:`messaging.recorder.writer`). A handler is
therefore never slowed or failed by the recorder: when the stream cannot keep
up or is gone, records are dropped, counted in
``chimera_recorder_records_dropped_total`` and logged at WARNING (at most
every ten seconds).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
import time
from collections.abc import Generator
from contextvars import ContextVar
from typing import Protocol

from messaging._portal import Portal
from messaging.aio.envelope import Envelope, Outgoing
from messaging.aio.middleware import Middleware
from messaging.recorder.buffer import Buffer
from messaging.recorder.record import Record, safe_error_text, safe_headers
from messaging.recorder.settings import RecorderSettings, load_recorder_settings
from messaging.recorder.writer import Writer
from messaging.transport import Connection

_handling: ContextVar[str | None] = ContextVar("chimera_recorder_handling", default=None)
"""The message id of the delivery in hand: the cause of what its handler publishes."""

INSTANCE = f"{socket.gethostname()}:{os.getpid()}"


class _Pool(Protocol):
    """A connection pool, sync or async: the recorder writes on its publishing connection."""

    @property
    def publishing(self) -> Connection: ...


class FlightRecorder(Middleware):
    """Records what the pool's agents send and handle, to a RabbitMQ stream.

    Attach it to a pool, sync or async::

        pool.use(FlightRecorder(pool))

    or set ``RECORDER__ENABLED=true`` and every pool gets one. ``settings``
    defaults to the ``RECORDER__*`` environment variables.
    """

    def __init__(self, pool: _Pool, settings: RecorderSettings | None = None) -> None:
        self.settings = settings if settings is not None else load_recorder_settings()
        self._connection = pool.publishing
        # The sync pool wraps the async one, which knows when it is closed.
        self._core = getattr(pool, "aio", pool)
        self._buffer = Buffer(self.settings.buffer)
        self._writer: Writer | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock = threading.Lock()

    # -- the middleware ---------------------------------------------------------

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        started_at = time.time()
        started = time.perf_counter()
        token = _handling.set(envelope.message_id)
        try:
            yield
        except Exception as exc:
            self._add(self._handled(envelope, started_at, started, exc))
            raise
        finally:
            _handling.reset(token)
        self._add(self._handled(envelope, started_at, started, None))

    def publish(self, outgoing: Outgoing) -> None:
        settings = self.settings
        record = Record(
            kind="publish",
            ts=time.time(),
            agent=outgoing.agent_name,
            instance=INSTANCE,
            correlation_id=outgoing.correlation_id,
            message_id=outgoing.message_id,
            cause_id=_handling.get(),
            exchange=outgoing.exchange,
            routing_key=outgoing.routing_key,
            type=outgoing.message.DESCRIPTOR.full_name,
            reply_to=outgoing.reply_to,
        )
        if settings.records_bodies_of(outgoing.agent_name):
            self._with_body(record, outgoing.message.SerializeToString(), outgoing.headers)
        self._add(record)

    # -- records ------------------------------------------------------------------

    def _handled(
        self, envelope: Envelope, started_at: float, started: float, error: Exception | None
    ) -> Record:
        properties = envelope.properties
        record = Record(
            kind="handle",
            ts=started_at,
            agent=envelope.agent_name,
            instance=INSTANCE,
            correlation_id=envelope.correlation_id,
            message_id=envelope.message_id,
            exchange=properties.get("exchange") or None,
            routing_key=envelope.routing_key,
            type=properties.get("type") or envelope.message.DESCRIPTOR.full_name,
            reply_to=properties.get("reply_to"),
            outcome="ok" if error is None else "error",
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            attempt=properties.get("attempt"),
        )
        if error is not None:
            record.error_type = error_type_name(error)
            record.error = safe_error_text(str(error))
        if self.settings.records_bodies_of(envelope.agent_name):
            self._with_body(record, envelope.body, envelope.headers)
        return record

    def _with_body(self, record: Record, body: bytes, headers: dict[str, object]) -> None:
        cap = self.settings.body_max_bytes
        record.body = base64.b64encode(body[:cap]).decode("ascii")
        if len(body) > cap:
            record.body_truncated = True
        if headers:
            record.headers = safe_headers(dict(headers))

    def _add(self, record: Record) -> None:
        self._buffer.add(record)
        if self._task is None:
            self._start()

    # -- the writer's task ----------------------------------------------------------

    def _start(self) -> None:
        """Start the writer on the loop that runs the pool (any thread may call this)."""
        with self._start_lock:
            if self._loop is not None:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = Portal.get().loop  # a sync handler's thread: the IO thread runs the pool
            self._loop = loop
        if loop.is_running() and _on(loop):
            self._begin()
        else:
            loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        writer = self._writer = Writer(
            self._buffer, self._connection, self.settings, self._pool_closed
        )
        self._task = asyncio.get_running_loop().create_task(
            writer.run(), name="chimera-flight-recorder"
        )

    def _pool_closed(self) -> bool:
        return bool(getattr(self._core, "closed", False))

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything recorded so far was written (or counted as lost)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            writer = self._writer
            if not len(self._buffer) and (writer is None or not writer.busy):
                return
            if writer is not None:
                writer.wake()
            await asyncio.sleep(0.01)

    def wait_written(self, timeout: float = 10.0) -> None:
        """:meth:`flush` for the sync API: block until what was recorded so far is written."""
        Portal.get().call(self.flush(timeout))

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered (within ``timeout``) and stop the writer."""
        task, writer = self._task, self._writer
        if task is None or writer is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return  # its writer runs on another loop: it stops there, once its pool is closed
        await writer.close(task, timeout)

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def error_type_name(error: BaseException) -> str:
    """``module.Class``, as the dead-letter headers name it (``x-chimera-error-type``)."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
