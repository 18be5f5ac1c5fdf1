"""Acks, nacks and rejects queued for the socket without a Task each.

aiormq's ``basic_ack(wait=False)`` is a coroutine: settling a delivery cost a
Task, a coroutine and a wake-up of the connection's writer queue. The frames
are a fixed 21 octets, so :func:`settle_frame` packs them directly (checked
against pamqp's encoder in ``tests/unit/test_settle_frames.py``) and
:func:`queue_frame` puts them on aiormq's write queue at once, in order with
everything else aiormq writes: only when nothing is waiting to be queued
before them (the queue holds 10 frames, and a full queue makes aiormq's own
writers wait their turn). Otherwise, or if aiormq changes shape, the caller
takes aiormq's coroutine path.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiormq.abc import ChannelFrame

# frame type 1 (method), channel, payload size 13, class 60 (basic), method,
# delivery tag, flag bits, frame end 0xCE
_SETTLE = struct.Struct(">BHIHHQBB")
_BASIC = 60
ACK, REJECT, NACK = 80, 90, 120
_FRAME_END = 0xCE


def settle_frame(channel: int, method: int, delivery_tag: int, bits: int) -> bytes:
    """The frame of basic.ack (``bits``: multiple), basic.reject (requeue) or
    basic.nack (multiple | requeue << 1)."""
    return _SETTLE.pack(1, channel, 13, _BASIC, method, delivery_tag, bits, _FRAME_END)


def queue_frame(raw: Any, payload: bytes) -> bool:
    """Put ``payload`` on ``raw``'s connection write queue now; False: not safe, not queued."""
    queue: asyncio.Queue[ChannelFrame] | None = getattr(raw, "write_queue", None)
    if queue is None or queue.full():
        return False
    waiting = getattr(queue, "_putters", None)  # asyncio.Queue's own writers, waiting for room
    if waiting is None or waiting:
        return False
    closing: asyncio.Event | None = getattr(raw, "_Channel__close_event", None)
    if closing is None or closing.is_set():
        return False  # as aiormq's basic_ack: nothing after the channel's close
    queue.put_nowait(ChannelFrame(payload=payload, should_close=False))
    return True
