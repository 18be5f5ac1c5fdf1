"""The shortcut from aiormq's connection reader to an InlineConsumer, without the channel's queue.

A stand-in channel with aiormq's attributes: frames are put as the
connection's reader puts them; what is not a whole delivery for an
InlineConsumer must reach the channel's queue unchanged and in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from messaging.transport.amqp.inline import InlineConsumer, dispatch_inline


class Channel:
    """What dispatch_inline and the shortcut use of an aiormq channel."""

    def __init__(self, frames: bool = True) -> None:
        self.consumers: dict[str, Any] = {}
        if frames:
            self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.is_closed = False
        self.seen: list[DeliveredMessage] = []
        self.consumers["inline"] = InlineConsumer(self.seen.append)

        async def by_task(message: DeliveredMessage) -> None: ...

        self.consumers["task"] = by_task

    async def _Channel__get_content_header(self) -> ContentHeader:  # noqa: N802  (aiormq's name)
        raise AssertionError("not called here")

    async def _read_content(self, frame: Any, header: ContentHeader) -> DeliveredMessage:
        raise AssertionError("not called here")

    async def _on_deliver_frame(self, frame: commands.Basic.Deliver) -> None:
        raise AssertionError("not called here")

    async def put(self, *frames: Any) -> None:
        for frame in frames:  # as aiormq's Connection.__reader does
            await self.frames.put((0, frame))

    def queued(self) -> list[Any]:
        items = []
        while not self.frames.empty():
            items.append(self.frames.get_nowait()[1])
        return items


def _delivery(tag: str, n: int, *parts: bytes) -> list[Any]:
    deliver = commands.Basic.Deliver(tag, n, False, "ex", "rk")
    size = sum(len(part) for part in parts)
    header = ContentHeader(0, size, commands.Basic.Properties(message_id=str(n)))
    return [deliver, header, *(ContentBody(part) for part in parts)]


async def _switched() -> Channel:
    channel = Channel()
    assert dispatch_inline(channel)  # type: ignore[arg-type]
    return channel


def test_a_delivery_for_an_inline_consumer_is_handed_over_without_the_queue() -> None:
    async def main() -> None:
        channel = await _switched()
        await channel.put(*_delivery("inline", 1, b"ab", b"cd", b"e"))
        await channel.put(*_delivery("inline", 2))  # no body at all
        assert channel.queued() == []
        assert [m.body for m in channel.seen] == [b"abcde", b""]
        first = channel.seen[0]
        assert isinstance(first.delivery, commands.Basic.Deliver)
        assert first.delivery.delivery_tag == 1
        assert first.header.properties.message_id == "1"
        assert first.channel is cast(Any, channel)

    asyncio.run(main())


def test_other_consumers_and_frames_go_through_the_queue_in_order() -> None:
    async def main() -> None:
        channel = await _switched()
        frames = [*_delivery("task", 1, b"x"), commands.Basic.Ack(3), commands.Basic.CancelOk("t")]
        await channel.put(*frames)
        assert channel.queued() == frames
        assert channel.seen == []

    asyncio.run(main())


def test_no_delivery_overtakes_part_of_one_still_queued() -> None:
    async def main() -> None:
        channel = await _switched()
        earlier = _delivery("task", 1, b"x")
        await channel.put(*earlier)
        later = _delivery("inline", 2, b"y")
        await channel.put(*later)
        assert channel.seen == []
        assert channel.queued() == earlier + later  # the channel's reader takes them all
        await channel.put(*_delivery("inline", 3, b"z"))  # the queue drained: the shortcut again
        assert [m.body for m in channel.seen] == [b"z"]

    asyncio.run(main())


def test_a_queued_reply_does_not_hold_deliveries_back() -> None:
    async def main() -> None:
        channel = await _switched()
        reply = commands.Basic.ConsumeOk("inline")
        await channel.put(reply, *_delivery("inline", 1, b"x"))
        assert [m.body for m in channel.seen] == [b"x"]
        assert channel.queued() == [reply]

    asyncio.run(main())


def test_a_delivery_that_does_not_continue_as_amqp_says_is_left_to_the_channel() -> None:
    async def main() -> None:
        channel = await _switched()
        deliver, header, body = _delivery("inline", 1, b"xy")
        ack = commands.Basic.Ack(1)
        await channel.put(deliver, ack)
        assert channel.queued() == [deliver, ack]
        await channel.put(deliver, header, header)
        assert channel.queued() == [deliver, header, header]
        await channel.put(deliver, body)
        assert channel.queued() == [deliver, body]
        assert channel.seen == []

    asyncio.run(main())


def test_a_consumer_gone_or_a_channel_closed_meanwhile_leaves_it_to_the_channel() -> None:
    async def main() -> None:
        channel = await _switched()
        frames = _delivery("inline", 1, b"a", b"b")
        await channel.put(*frames[:3])
        inline = channel.consumers.pop("inline")
        await channel.put(frames[3])
        assert channel.queued() == frames
        channel.consumers["inline"] = inline
        channel.is_closed = True
        await channel.put(*frames)
        assert channel.queued() == frames
        assert channel.seen == []

    asyncio.run(main())


def test_a_failing_callback_is_logged_and_the_next_delivery_still_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        channel = await _switched()
        calls: list[bytes] = []

        def fail_once(message: DeliveredMessage) -> None:
            calls.append(message.body)
            if len(calls) == 1:
                raise RuntimeError("boom")

        channel.consumers["inline"] = InlineConsumer(fail_once)
        await channel.put(*_delivery("inline", 1, b"a"), *_delivery("inline", 2, b"b"))
        assert calls == [b"a", b"b"]
        assert channel.queued() == []

    asyncio.run(main())
    assert "delivery callback failed" in caplog.text


def test_without_a_frame_queue_only_the_shortcut_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "messaging.channel")
    channel = Channel(frames=False)
    assert dispatch_inline(channel)  # type: ignore[arg-type]
    assert "frame queue" in caplog.text


def test_switching_twice_keeps_one_shortcut() -> None:
    async def main() -> None:
        channel = await _switched()
        put = channel.frames.put
        assert dispatch_inline(channel)  # type: ignore[arg-type]
        assert channel.frames.put == put
        await channel.put(*_delivery("inline", 1, b"a"))
        assert [m.body for m in channel.seen] == [b"a"]

    asyncio.run(main())
