"""Publishing on an open aiormq channel without aiormq's per-message machinery.

aiormq's ``Channel.basic_publish`` costs, per message: a ``Countdown``, the
``_raise_on_channel_close()`` and ``asyncio.timeout()`` context managers,
``async with self.lock``, pamqp marshalling of three frame objects through a
``BytesIO``, ``write_queue.put`` and (``wait=True``) a drain future that the
connection's writer task resolves after ``writer.write`` and ``drain``: one
``write`` system call and two extra loop hops per message before the confirm
is even awaited. Profiled (bench/profile.py, ``bus aio window+uvloop``, 256
in flight, 2026-11-27): ``basic_publish`` and the writer were about 68 % of
the IO loop's samples, ``StreamWriter.write`` alone 18 %.

:class:`ChannelWriter` does the same publish synchronously, with no await
between taking the delivery tag and queueing the frames:

- the delivery tag and confirmation future are registered exactly as aiormq
  does (``delivery_tag``, ``confirmations``, ``message_id_delivery_tag``, the
  future from ``create_future()``), so aiormq's own ``Basic.Ack``/``Nack``,
  ``Basic.Return`` and channel/connection close handling resolve or fail it,
  and the caller sees the same exceptions as from ``basic_publish``;
- the frames are built here (the ``Basic.Publish`` method frame is cached per
  exchange, routing key and mandatory flag; the content header comes from
  :func:`~messaging.transport.amqp.properties.content_header`, byte for byte
  what pamqp writes) and appended to the connection's ``write_queue``: to the
  queue's last item when that is a :class:`Batch` not yet taken by the writer
  (publishes of one loop iteration go out in one ``write``), else as a new
  :class:`Batch` with ``put_nowait``. Either way the frames land at the tail,
  exactly where ``put`` would have put them, so the order with everything
  else aiormq writes is kept;
- only the confirmation is awaited, with the caller's deadline (a timer, not
  an ``asyncio.timeout`` block); on a channel without confirms, a drain
  future (resolved once the writer handed the batch to the socket, as
  ``wait=True`` does) instead.

It is only taken when it is safe: the channel is open, its lock is free and
nobody waits for it (no ``basic_publish`` or RPC is between taking a tag and
queueing its frames, and none waits to: publishes on a channel go out in the
order they were called, as with ``basic_publish`` alone), no writer is
waiting for room in the queue, and the message has a
``message_id`` (aiormq would make one up and write it into the properties).
Otherwise :meth:`ChannelWriter.publish` returns False and the caller uses
``basic_publish``. :func:`attach` checks aiormq's shape once per channel
(the private names used: the channel's ``_Channel__lock``,
``_Channel__close_event``, ``_closing`` and ``_close_exception``, and
``asyncio.Queue``'s ``_queue`` and ``_putters``); if a future aiormq renames
one, it returns None, logs at DEBUG, and every publish goes through
``basic_publish`` again: slower, the same.

Measured (``bench/run.py --worker IMPL publish``, 3 rounds interleaved with
the tree before, 2026-11-27 19:10 UTC, CPU µs per message): ``bus aio
window+uvloop`` 84-87 -> 23-25 (raw aiormq+uvloop: 48-60), ``bus aio
window`` 115-122 -> 33-35, ``bus aio+uvloop`` one at a time 210-222 ->
146-156, ``bus nowait`` 108-125 -> 40-42, ``bus`` (sync) 247-300 -> 128-166;
with the content header packed by
:func:`~messaging.transport.amqp.properties.content_header` instead of
pamqp's properties object and marshal (3.6 against 8.7 µs, 2026-11-27 23:00).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any

import aiormq
from pamqp import commands as spec

from messaging.transport.amqp.lenient import marshal_method
from messaging.transport.amqp.properties import content_header
from messaging.transport.base import MessageProperties

log = logging.getLogger("messaging.channel")

_FRAME_HEADER = struct.Struct(">BHI")
_FRAME_END = b"\xce"
_FRAME_HEADER_TYPE = 2
_FRAME_BODY_TYPE = 3
_METHOD_CACHE_SIZE = 512


class Batch:
    """Frames for the connection's writer, as aiormq's ``ChannelFrame``: the
    writer reads ``payload``, ``should_close``, ``should_drain`` and calls
    ``drain()``. Parts are appended while the batch waits in the queue."""

    __slots__ = ("drains", "parts")

    should_close = False

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.drains: list[asyncio.Future[Any]] | None = None

    @property
    def payload(self) -> bytes:
        return b"".join(self.parts)

    @property
    def should_drain(self) -> bool:
        drains = self.drains
        return drains is not None and any(not f.done() for f in drains)

    def drain(self) -> None:
        for future in self.drains or ():
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return f"<Batch of {len(self.parts)} part(s)>"


class ChannelWriter:
    """The fast publish path for one aiormq channel (see the module docstring)."""

    __slots__ = (
        "_closing_event",
        "_lock",
        "_methods",
        "_putters",
        "_queue",
        "_tail",
        "channel",
        "confirms",
        "max_body",
        "number",
    )

    def __init__(self, channel: Any, lock: asyncio.Lock, queue: asyncio.Queue[Any]) -> None:
        self.channel = channel
        self.confirms: bool = bool(channel.publisher_confirms)
        self.number: int = channel.number
        self.max_body: int = channel.max_content_size
        self._lock = lock
        # Set once Channel.Close or Close-Ok went by, a few loop turns before
        # is_closed: a publish frame queued after our Close-Ok would make the
        # broker close the whole connection (aiormq's own lock check misses it).
        self._closing_event: asyncio.Event = channel._Channel__close_event
        self._queue = queue
        self._tail: deque[Any] = queue._queue  # type: ignore[attr-defined]
        self._putters: deque[Any] = queue._putters  # type: ignore[attr-defined]
        self._methods: dict[tuple[str, str, bool], bytes] = {}

    async def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: MessageProperties,
        mandatory: bool,
        timeout: float,
    ) -> bool:
        """Publish and await the confirm (or, without confirms, the socket write).

        False when the fast path is not safe now (nothing was sent: use
        ``basic_publish``). Raises what ``basic_publish`` raises: first what
        marshalling raises (a routing key over 255 characters, a bad header
        value), before anything is registered or queued; then ``TimeoutError``
        after ``timeout`` seconds (the future is cancelled, as
        ``asyncio.timeout`` cancels it, so aiormq logs a late confirm at
        DEBUG), or the future's exception when the broker nacks, returns or
        closes; a ``CancelledError`` that the channel's close sent into a task
        it owns becomes the close's reason, as in aiormq's
        ``_raise_on_channel_close``.
        """
        if timeout <= 0:
            return False
        sent = self.send(body, exchange, routing_key, properties, mandatory)
        if sent is None:
            return False
        future, tag = sent
        channel = self.channel
        timer = channel.loop.call_later(timeout, future.cancel, _DEADLINE)
        try:
            await future
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if exc.args and exc.args[0] is _DEADLINE and task is not None and not task.cancelling():
                raise TimeoutError from None
            _raise_close_reason(channel, exc, task)
            raise
        finally:
            timer.cancel()
            if self.confirms:
                # aiormq's forget_message_id: drop the mapping while it is this message's.
                tags = channel.message_id_delivery_tag
                message_id = properties.message_id
                if tags.get(message_id) == tag:
                    del tags[message_id]
        return True

    def send(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: MessageProperties,
        mandatory: bool,
    ) -> tuple[asyncio.Future[Any], int] | None:
        """Register and queue one publish, synchronously: (its future, its delivery
        tag), or None when the fast path is not safe now (nothing done)."""
        channel = self.channel
        message_id = properties.message_id
        if (
            not message_id
            or channel.is_closed
            or self._closing_event.is_set()
            or self._lock.locked()
            or self._lock._waiters
            or self._putters
        ):
            return None
        key = (exchange, routing_key, mandatory)
        method = self._methods.get(key)
        if method is None:
            method = self._method_frame(key)
        number = self.number
        header = content_header(properties, len(body))
        parts = [method, _FRAME_HEADER.pack(_FRAME_HEADER_TYPE, number, len(header)), header]
        if body:
            size = len(body)
            max_body = self.max_body
            if size < max_body:
                parts += (_FRAME_END, _FRAME_HEADER.pack(_FRAME_BODY_TYPE, number, size), body)
            else:
                view = memoryview(body)
                for start in range(0, size, max_body):
                    chunk = bytes(view[start : start + max_body])
                    parts += (
                        _FRAME_END,
                        _FRAME_HEADER.pack(_FRAME_BODY_TYPE, number, len(chunk)),
                        chunk,
                    )
        parts.append(_FRAME_END)

        tail = self._tail
        batch = tail[-1] if tail else None
        if type(batch) is not Batch:
            if self._queue.full():
                return None
            batch = None
        # From here on nothing raises (and nothing yields): the tag and the
        # frames' place in the queue are taken together.
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        future: asyncio.Future[Any] = channel.create_future()
        confirms = self.confirms
        if confirms:
            channel.confirmations[tag] = future
            channel.message_id_delivery_tag[message_id] = tag
        if batch is None:
            batch = Batch(parts)
            self._queue.put_nowait(batch)
        else:
            batch.parts += parts
        if not confirms:
            if batch.drains is None:
                batch.drains = [future]
            else:
                batch.drains.append(future)
        return future, tag

    def queue_frame(self, frame: bytes) -> bool:
        """Put whole frames that take no delivery tag (an ack) at the write queue's
        tail now, in this loop turn's batch when there is one; False: not safe
        now (the channel closing, the queue full or writers waiting for room),
        nothing done."""
        if self.channel.is_closed or self._closing_event.is_set() or self._putters:
            return False
        tail = self._tail
        batch = tail[-1] if tail else None
        if type(batch) is Batch:
            batch.parts.append(frame)
        elif self._queue.full():
            return False
        else:
            self._queue.put_nowait(Batch([frame]))
        return True

    def _method_frame(self, key: tuple[str, str, bool]) -> bytes:
        exchange, routing_key, mandatory = key
        if len(routing_key) > 255:  # as aiormq's basic_publish checks it
            raise ValueError("Routing key too long (max 255 bytes)")
        # pamqp validates the names as for basic_publish; a routing key of
        # foreign octets (a dead-letter copy's) goes back as those octets.
        method = marshal_method(
            spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
            self.number,
        )
        if len(self._methods) >= _METHOD_CACHE_SIZE:
            self._methods.clear()
        self._methods[key] = method
        return method


_DEADLINE = "publish deadline passed"
"""The message the deadline timer cancels a publish's future with (compared by identity)."""


def _raise_close_reason(channel: Any, exc: asyncio.CancelledError, task: Any) -> None:
    """aiormq's ``_raise_on_channel_close``: a cancellation sent by this channel's close
    into the task (one it owns, a consumer's) surfaces as the close's reason."""
    closing: asyncio.Future[Any] = channel._closing
    if closing.done() and not closing.cancelled():
        reason = channel._close_exception
        if (
            isinstance(reason, Exception)
            and closing.exception() is reason
            and len(exc.args) == 1
            and exc.args[0] is reason
            and task is not None
            and task.cancelling() == 1
        ):
            task.uncancel()
            raise reason from exc


def attach(raw: aiormq.abc.AbstractChannel) -> ChannelWriter | None:
    """A :class:`ChannelWriter` for ``raw``, or None when aiormq's shape is not the one
    this was written against (then publishes go through ``basic_publish``)."""
    channel: Any = raw
    try:
        lock = channel._Channel__lock
        queue = channel.write_queue
        ok = (
            isinstance(lock, asyncio.Lock)
            and hasattr(lock, "_waiters")
            and isinstance(channel._Channel__close_event, asyncio.Event)
            and type(queue) is asyncio.Queue
            and isinstance(getattr(queue, "_queue", None), deque)
            and isinstance(getattr(queue, "_putters", None), deque)
            and isinstance(channel.delivery_tag, int)
            and isinstance(channel.confirmations, dict)
            and isinstance(channel.message_id_delivery_tag, dict)
            and isinstance(channel.number, int)
            and isinstance(channel.max_content_size, int)
            and channel.max_content_size > 0  # frame_max 0 (no limit): aiormq's own way
            and isinstance(channel._closing, asyncio.Future)
            and hasattr(channel, "_close_exception")
            and callable(channel.create_future)
        )
    except AttributeError:
        ok = False
    if not ok:
        log.debug("aiormq changed: publishes go through basic_publish")
        return None
    return ChannelWriter(channel, lock, queue)


__all__ = ["Batch", "ChannelWriter", "attach"]
