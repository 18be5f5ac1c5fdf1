"""Deliveries handed to a plain function on the reader, without a Task each.

aiormq runs every consumer callback as a new Task (``create_task(callback(msg))``
in ``Channel._on_deliver_frame``): for a callback that only queues the delivery
for another thread, or completes a future, the Task costs more than the work.
:func:`dispatch_inline` makes one channel call :class:`InlineConsumer` callbacks
directly, in delivery order, on the channel's reader; any other callback still
gets its Task. aiormq's own frame reading (pamqp's codec) is unchanged.

The override uses one private aiormq method (``_Channel__get_content_header``);
if a future aiormq renames it, :func:`dispatch_inline` returns False and every
callback goes the Task way again (:meth:`InlineConsumer.__call__`), slower but
the same.

Shorter still: aiormq's connection reader puts each frame in the channel's
``frames`` queue, and the channel's own reader task takes it out again (three
frames a message, each a queue put, a wake-up and a get). On a switched
channel, the queue's ``put`` (as the connection's reader calls it) assembles a
delivery for an :class:`InlineConsumer` itself and calls the consumer at once
(:class:`_FrameShortcut`). It does so only when no part of an earlier delivery
is still queued, so deliveries keep their order; anything else (another frame,
another consumer, a delivery that does not continue as AMQP says, a closed
channel) goes into the queue as before, in the order received, for the
channel's reader to handle. A queued reply, confirm or cancel may be overtaken
by a delivery, as it may be by the callback Task aiormq would otherwise start.
Without a ``frames`` queue (a future aiormq), the shortcut is left out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

log = logging.getLogger("messaging.channel")

InlineCallback = Callable[[DeliveredMessage], None]


class InlineConsumer:
    """A consumer callback that must not block: called on the reader when it can be."""

    __slots__ = ("inline",)

    def __init__(self, inline: InlineCallback) -> None:
        self.inline = inline

    async def __call__(self, message: DeliveredMessage) -> None:
        # aiormq's own path (a Task), when the channel could not be switched.
        self.inline(message)


def dispatch_inline(raw: aiormq.abc.AbstractChannel) -> bool:
    """Make ``raw`` call :class:`InlineConsumer` s without a Task; False if it cannot."""
    channel: Any = raw
    get_header = getattr(channel, "_Channel__get_content_header", None)
    read_content = getattr(channel, "_read_content", None)
    on_deliver = getattr(channel, "_on_deliver_frame", None)
    if get_header is None or read_content is None or on_deliver is None:
        log.debug("aiormq changed: deliveries go through a Task each")
        return False

    async def on_deliver_frame(frame: Basic.Deliver) -> None:
        consumer = channel.consumers.get(frame.consumer_tag)
        # aiormq's basic_consume wraps a callback that is not a coroutine
        # function (aiormq.tools.awaitable, functools.wraps): look through it.
        consumer = getattr(consumer, "__wrapped__", consumer)
        if not isinstance(consumer, InlineConsumer):
            await on_deliver(frame)
            return
        header = await get_header()
        message: DeliveredMessage = await read_content(frame, header)
        try:
            consumer.inline(message)
        except Exception:  # as aiormq's _on_consumer_done: log, keep reading
            log.exception("delivery callback failed")

    channel._on_deliver_frame = on_deliver_frame
    frames = getattr(channel, "frames", None)
    if not isinstance(frames, asyncio.Queue):
        log.debug("aiormq changed: deliveries go through the channel's frame queue")
    elif "put" not in vars(frames):
        frames.put = _FrameShortcut(channel, frames).put  # type: ignore[method-assign]
    return True


def _inline_consumer(channel: Any, frame: Basic.Deliver) -> InlineConsumer | None:
    consumer = channel.consumers.get(frame.consumer_tag)
    consumer = getattr(consumer, "__wrapped__", consumer)  # see on_deliver_frame
    return consumer if isinstance(consumer, InlineConsumer) else None


_DELIVERY_PARTS = (Basic.Deliver, ContentHeader, ContentBody)


class _FrameShortcut:
    """A channel's ``frames.put``: deliveries for an :class:`InlineConsumer` handed over here."""

    __slots__ = (
        "_channel",
        "_header",
        "_kinds",
        "_parts",
        "_pending",
        "_put",
        "_queue",
        "_queued_parts",
        "_received",
    )

    def __init__(self, channel: Any, queue: asyncio.Queue[Any]) -> None:
        self._channel = channel
        self._queue = queue
        self._put = queue.put  # the queue's own
        self._pending: list[Any] = []  # the delivery's frames so far, as received
        self._header: ContentHeader | None = None
        self._parts: list[bytes] = []
        self._received = 0
        # What was queued here, oldest first: True for a part of a delivery.
        # The queue is FIFO, so the last qsize() of these are still in it.
        self._kinds: deque[bool] = deque()
        self._queued_parts = 0

    async def put(self, item: tuple[int, Any]) -> None:
        frame = item[1]
        if not self._pending:
            if (
                type(frame) is Basic.Deliver
                and not self._channel.is_closed
                and not self._delivery_queued()
                and _inline_consumer(self._channel, frame) is not None
            ):
                self._pending.append(item)
                return
            await self._enqueue(item)
            return
        self._pending.append(item)
        header = self._header
        if header is None and isinstance(frame, ContentHeader):
            self._header = header = frame
        elif header is not None and isinstance(frame, ContentBody):
            self._parts.append(frame.value)
            self._received += len(frame.value)
        else:  # not a delivery as AMQP sends one: the channel's reader says what it is
            await self._flush()
            return
        if self._received < header.body_size:
            return
        deliver = self._pending[0][1]
        consumer = _inline_consumer(self._channel, deliver)
        if consumer is None or self._channel.is_closed:
            await self._flush()
            return
        message = DeliveredMessage(
            delivery=deliver, header=header, body=b"".join(self._parts), channel=self._channel
        )
        self._reset()
        try:
            consumer.inline(message)
        except Exception:  # as aiormq's _on_consumer_done: log, keep reading
            log.exception("delivery callback failed")

    def _delivery_queued(self) -> bool:
        """True while part of an earlier delivery (or anything queued before us) is queued."""
        kinds, size = self._kinds, self._queue.qsize()
        while len(kinds) > size:
            if kinds.popleft():
                self._queued_parts -= 1
        return self._queued_parts > 0 or len(kinds) < size

    async def _enqueue(self, item: tuple[int, Any]) -> None:
        part = type(item[1]) in _DELIVERY_PARTS
        self._kinds.append(part)
        self._queued_parts += part
        await self._put(item)

    async def _flush(self) -> None:
        pending = self._pending
        self._reset()
        for item in pending:
            await self._enqueue(item)

    def _reset(self) -> None:
        self._pending = []
        self._header = None
        self._parts = []
        self._received = 0


__all__ = ["InlineCallback", "InlineConsumer", "dispatch_inline"]
