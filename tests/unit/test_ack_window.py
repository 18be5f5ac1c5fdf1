"""The one ack policy both APIs use: a multiple=True ack never covers a tag still open."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from messaging.aio.pipeline import AckWindow


@dataclass
class RecordingChannel:
    """Records the acks a window sends (the settle calls of the Channel seam)."""

    generation: int = 1
    acks: list[tuple[int, bool]] = field(default_factory=list)

    def ack(self, delivery_tag: int, generation: int, *, multiple: bool = False) -> bool:
        assert generation == self.generation, "an ack for a gone channel was sent"
        self.acks.append((delivery_tag, multiple))
        return True


@dataclass
class OneChannel:
    open_channel: RecordingChannel | None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def window(loop: asyncio.AbstractEventLoop, channel: RecordingChannel | None) -> AckWindow:
    return AckWindow(OneChannel(channel), loop)  # type: ignore[arg-type]


def test_handled_in_order_is_one_multiple_ack(loop: asyncio.AbstractEventLoop) -> None:
    channel = RecordingChannel()
    acks = window(loop, channel)
    for tag in (1, 2, 3):
        acks.delivered(tag, 1)
    for tag in (1, 2, 3):
        acks.done(tag, 1, flush_soon=False)
    acks.flush()
    assert channel.acks == [(3, True)]


def test_an_open_tag_stops_the_run_and_later_ones_go_singly(
    loop: asyncio.AbstractEventLoop,
) -> None:
    channel = RecordingChannel()
    acks = window(loop, channel)
    for tag in (1, 2, 3, 4):
        acks.delivered(tag, 1)
    for tag in (1, 3, 4):  # 2 failed and is being moved
        acks.done(tag, 1, flush_soon=False)
    acks.flush()
    assert channel.acks == [(1, True), (3, False), (4, False)]
    acks.forget(2, 1)  # moved and settled on its own
    acks.delivered(5, 1)
    acks.done(5, 1, flush_soon=False)
    acks.flush()
    assert channel.acks[-1] == (5, True)


def test_a_new_channel_forgets_the_old_tags(loop: asyncio.AbstractEventLoop) -> None:
    channel = RecordingChannel()
    acks = window(loop, channel)
    acks.delivered(1, 1)
    channel.generation = 2
    acks.delivered(1, 2)  # tags restart on the new channel
    acks.done(1, 1, flush_soon=False)  # the old delivery's handler returns: dropped
    acks.flush()
    assert channel.acks == []
    acks.done(1, 2, flush_soon=False)
    acks.flush()
    assert channel.acks == [(1, True)]


def test_done_flushes_in_the_same_loop_turn(loop: asyncio.AbstractEventLoop) -> None:
    channel = RecordingChannel()
    acks = window(loop, channel)
    acks.delivered(1, 1)
    acks.delivered(2, 1)
    acks.done(1, 1)
    acks.done(2, 1)
    loop.run_until_complete(asyncio.sleep(0))
    assert channel.acks == [(2, True)]


def test_a_closed_channel_gets_nothing_and_its_tags_are_dropped(
    loop: asyncio.AbstractEventLoop,
) -> None:
    consumer = OneChannel(None)
    acks = AckWindow(consumer, loop)  # type: ignore[arg-type]
    acks.delivered(1, 1)
    acks.done(1, 1, flush_soon=False)
    acks.flush()  # no channel to settle on: the broker has the message again
    consumer.open_channel = channel = RecordingChannel()
    acks.flush()
    assert channel.acks == []
