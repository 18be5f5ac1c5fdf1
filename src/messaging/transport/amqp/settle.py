"""Acks, nacks and rejects as frames, packed without pamqp.

aiormq's ``basic_ack(wait=False)`` is a coroutine: settling a delivery cost a
Task, a coroutine and a wake-up of the connection's writer queue. The frames
are a fixed 21 octets, so :func:`settle_frame` packs them directly (checked
against pamqp's encoder in ``tests/unit/test_settle_frames.py``) and the
channel queues them with
:meth:`~messaging.transport.amqp.fastpublish.ChannelWriter.queue_frame`,
in this loop turn's write with the publishes, when that is safe; otherwise it
takes aiormq's coroutine path.
"""

from __future__ import annotations

import struct

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
