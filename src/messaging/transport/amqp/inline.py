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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

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
    return True


__all__ = ["InlineCallback", "InlineConsumer", "dispatch_inline"]
