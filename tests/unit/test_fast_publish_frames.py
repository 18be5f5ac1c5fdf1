"""The fast publish path's wire bytes and shape guard, without a broker.

``content_header`` must write exactly what pamqp writes for the same
properties (it replaced ``ContentHeader(0, size, amqp_properties(p)).marshal()``
on the publish path), and a publish's frames must be exactly aiormq's
``ChannelFrame.marshall`` of ``[Basic.Publish, ContentHeader, *bodies]``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pamqp.frame
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

import messaging.transport  # noqa: F401  (installs the lenient codecs, as the bus does)
from messaging.aio.publisher import new_message_id
from messaging.transport import Properties
from messaging.transport.amqp import fastpublish
from messaging.transport.amqp.properties import amqp_properties, content_header
from messaging.wiretext import RawTimestamp


def pamqp_header(props: Any, size: int) -> bytes:
    return ContentHeader(0, size, amqp_properties(props)).marshal()


CASES = [
    Properties(),
    Properties(message_id="m"),
    Properties(
        content_type="application/x-protobuf",
        delivery_mode=2,
        message_id="6f1c0f4e-2b7e-4c55-9f55-0b8c7d1e2a3f",
        correlation_id="c-1",
        reply_to="amq.rabbitmq.reply-to.g1h2",
        message_type="chimera.QueryRequest",
        app_id="agent",
        timestamp=datetime(2026, 11, 27, 18, 0, 1, 999, tzinfo=UTC),
        headers={"traceparent": "00-abc-def-01", "x-retry": 3, "nested": {"a": [1, "b", 2.5]}},
    ),
    Properties(headers={}, priority=0, delivery_mode=1, expiration="1500", user_id="guest"),
    Properties(content_type="", content_encoding="", message_id="", app_id=""),
    Properties(content_encoding="gzip", timestamp=datetime(2001, 1, 1)),  # naive: taken as UTC
    Properties(timestamp=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
    Properties(timestamp=RawTimestamp(2**63 + 5)),  # type: ignore[arg-type]  # a foreign 64-bit value, kept as it came
    Properties(message_id="caf\udce9", headers={"k\udcff": b"\xff\xfe"}),  # foreign octets
    Properties(cluster_id="from-another-client", delivery_mode=7),  # a copy of odd values
    spec.Basic.Properties(message_id="already-pamqp", delivery_mode=2),
]


@pytest.mark.parametrize("props", CASES, ids=range(len(CASES)))
def test_content_header_is_pamqps_byte_for_byte(props: Any) -> None:
    for size in (0, 1, 200, 2**40):
        assert content_header(props, size) == pamqp_header(props, size)


def test_random_properties_match_pamqp() -> None:
    rng = random.Random(11)
    names = ["content_type", "correlation_id", "reply_to", "expiration", "message_id", "app_id"]
    for _ in range(500):
        props = Properties()
        for name in names:
            if rng.random() < 0.5:
                setattr(
                    props, name, "".join(rng.choice("ab.-_é€😀") for _ in range(rng.randrange(9)))
                )
        if rng.random() < 0.5:
            props.delivery_mode = rng.choice([1, 2])
        if rng.random() < 0.3:
            props.priority = rng.randrange(10)
        if rng.random() < 0.5:
            props.headers = {f"h{i}": rng.choice([1, "x", True, None, 2.5]) for i in range(3)}
        assert content_header(props, 7) == pamqp_header(props, 7)


def test_values_pamqp_refuses_raise_the_same_error() -> None:
    for props in (
        Properties(message_id="x" * 256),
        Properties(delivery_mode="2"),  # type: ignore[arg-type]
        Properties(timestamp="yesterday"),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError):
            pamqp_header(props, 1)
        with pytest.raises(TypeError):
            content_header(props, 1)


class FakeChannel:
    """What ChannelWriter touches of an aiormq channel."""

    def __init__(self, loop: asyncio.AbstractEventLoop, confirms: bool = True) -> None:
        self._Channel__lock = asyncio.Lock()
        self._Channel__close_event = asyncio.Event()
        self.write_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=10)
        self.delivery_tag = 0
        self.confirmations: dict[int, Any] = {}
        self.message_id_delivery_tag: dict[str, int] = {}
        self.number = 7
        self.max_content_size = 100
        self.publisher_confirms = confirms
        self._closing = loop.create_future()
        self._close_exception = None
        self.loop = loop
        self.is_closed = False

    def create_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()


async def test_frames_are_aiormqs_and_one_loop_iteration_goes_out_as_one_batch() -> None:
    channel = FakeChannel(asyncio.get_running_loop())
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    sent = []
    for i, body in enumerate([b"", b"x" * 99, b"y" * 100, b"z" * 250]):
        props = Properties(message_id=f"m{i}", headers={"i": i})
        result = writer.send(body, "ex", f"rk.{i}", props, True)
        assert result is not None
        sent.append((result, body, props, i))
    assert channel.write_queue.qsize() == 1, "all four in one batch"
    batch = channel.write_queue.get_nowait()
    expected = b""
    for (future, tag), body, props, i in sent:
        assert tag == i + 1
        assert channel.confirmations[tag] is future
        assert channel.message_id_delivery_tag[f"m{i}"] == tag
        bodies = [ContentBody(body[s : s + 100]) for s in range(0, len(body), 100)]
        if len(body) < 100:
            bodies = [ContentBody(body)] if body else []
        frames: list[Any] = [
            spec.Basic.Publish(exchange="ex", routing_key=f"rk.{i}", mandatory=True),
            ContentHeader(0, len(body), amqp_properties(props)),
            *bodies,
        ]
        expected += ChannelFrame.marshall(channel_number=7, frames=frames).payload
    assert batch.payload == expected
    assert not batch.should_close
    assert not batch.should_drain
    for (future, _), *_ in sent:
        future.cancel()


async def test_it_steps_aside_when_not_safe() -> None:
    channel = FakeChannel(asyncio.get_running_loop())
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    props = Properties(message_id="m")
    async with channel._Channel__lock:  # a basic_publish or RPC in progress
        assert writer.send(b"x", "", "q", props, True) is None
    assert writer.send(b"x", "", "q", Properties(), True) is None  # no message_id
    for _ in range(10):
        channel.write_queue.put_nowait(ChannelFrame.marshall(7, [spec.Basic.Ack(1)]))
    assert writer.send(b"x", "", "q", props, True) is None  # full, and not ours at the tail
    channel.write_queue = asyncio.Queue()
    channel._Channel__close_event.set()  # Channel.Close came: Close-Ok is queued
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    assert writer.send(b"x", "", "q", props, True) is None
    channel.is_closed = True
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    assert writer.send(b"x", "", "q", props, True) is None
    assert channel.delivery_tag == 0, "nothing registered on the way out"
    assert not channel.confirmations
    assert not channel.message_id_delivery_tag


async def test_a_routing_key_aiormq_refuses_raises_before_anything_is_registered() -> None:
    channel = FakeChannel(asyncio.get_running_loop())
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    with pytest.raises(ValueError, match="Routing key too long"):
        writer.send(b"x", "", "k" * 256, Properties(message_id="m"), True)
    assert channel.delivery_tag == 0
    assert channel.write_queue.empty()


async def test_a_deadline_raises_timeout_and_forgets_the_message_id() -> None:
    channel = FakeChannel(asyncio.get_running_loop())
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    with pytest.raises(TimeoutError):
        await writer.publish(b"x", "", "q", Properties(message_id="m"), True, 0.01)
    assert channel.confirmations[1].cancelled()  # aiormq drops its confirm when it comes
    assert not channel.message_id_delivery_tag


async def test_an_outside_cancel_stays_a_cancel() -> None:
    channel = FakeChannel(asyncio.get_running_loop())
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    task = asyncio.ensure_future(
        writer.publish(b"x", "", "q", Properties(message_id="m"), True, 5.0)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_unconfirmed_publishes_wait_for_the_writer_to_hand_the_batch_over() -> None:
    channel = FakeChannel(asyncio.get_running_loop(), confirms=False)
    writer = fastpublish.attach(channel)  # type: ignore[arg-type]
    assert writer is not None
    waiting = [
        asyncio.ensure_future(
            writer.publish(b"x", "", "q", Properties(message_id=f"r{i}"), False, 5)
        )
        for i in range(3)
    ]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    assert not channel.confirmations
    batch = channel.write_queue.get_nowait()
    assert batch.should_drain
    batch.drain()  # what aiormq's writer does after writer.write() and drain()
    assert await asyncio.gather(*waiting) == [True, True, True]


def test_a_changed_aiormq_means_basic_publish_again(caplog: pytest.LogCaptureFixture) -> None:
    class Renamed:
        write_queue = asyncio.Queue[Any]()

    with caplog.at_level(logging.DEBUG, logger="messaging.channel"):
        assert fastpublish.attach(Renamed()) is None  # type: ignore[arg-type]
    assert "basic_publish" in caplog.text


async def test_no_frame_size_limit_means_basic_publish() -> None:
    channel = FakeChannel(asyncio.get_running_loop())
    channel.max_content_size = -8  # what aiormq computes for frame_max 0
    assert fastpublish.attach(channel) is None  # type: ignore[arg-type]


def test_the_publish_method_frame_is_pamqps() -> None:
    frame = spec.Basic.Publish(exchange="x", routing_key="a.b", mandatory=False)
    assert pamqp.frame.marshal(frame, 3).startswith(b"\x01\x00\x03")


def test_new_message_ids_are_uuid4_strings() -> None:
    seen = set()
    for _ in range(20000):
        text = new_message_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        seen.add(text)
    assert len(seen) == 20000
