"""The hand-packed ack, nack and reject frames are the octets pamqp would write."""

from __future__ import annotations

import random

import pytest
from pamqp import commands, frame

from messaging.transport.amqp.settle import ACK, NACK, REJECT, settle_frame

CASES = random.Random(20261127)
# pamqp encodes a delivery tag as a signed long-long: compare below 2**63.
TAGS = [1, 2, 255, 256, 2**31, 2**32 + 7, 2**63 - 1] + [CASES.getrandbits(63) for _ in range(50)]
CHANNELS = [1, 2, 7, 2047, 65535]


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("tag", TAGS)
def test_settle_frames_match_pamqp(channel: int, tag: int) -> None:
    for multiple in (False, True):
        expected = frame.marshal(commands.Basic.Ack(delivery_tag=tag, multiple=multiple), channel)
        assert settle_frame(channel, ACK, tag, int(multiple)) == expected
        for requeue in (False, True):
            nack = commands.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
            bits = int(multiple) | int(requeue) << 1
            assert settle_frame(channel, NACK, tag, bits) == frame.marshal(nack, channel)
    for requeue in (False, True):
        reject = commands.Basic.Reject(delivery_tag=tag, requeue=requeue)
        assert settle_frame(channel, REJECT, tag, int(requeue)) == frame.marshal(reject, channel)
