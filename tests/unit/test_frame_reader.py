"""The bus's frame reader against pamqp's decoder and aiormq's own reader, frame by frame.

Frames are built with pamqp's encoder (and pika's, for octets another client
sends); every one must decode to what ``pamqp.frame.unmarshal`` makes of it
(same class, same attribute values; for octets pamqp refuses, what the
lenient walk of :mod:`messaging.transport.amqp.lenient` makes of them),
however the stream is cut into reads, and every way a stream can end or break
must raise what aiormq's ``FrameReceiver`` raises on the same octets.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import inspect
import logging
import random
import struct
from collections.abc import Iterable, Sequence
from typing import Any, cast

import aiormq.connection
import pamqp.frame
import pika.spec
import pytest
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands, heartbeat
from pamqp.base import BasicProperties, Frame
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader, ProtocolHeader

import messaging.transport  # noqa: F401  (changes nothing of aiormq's: see test_no_patching)
from messaging.transport.amqp import frame_reader, lenient
from messaging.transport.amqp.frame_reader import FrameReader, decode_frame
from messaging.transport.amqp.properties import content_header
from messaging.wiretext import RawTimestamp, is_foreign, octets_of

BAD = b"\xff\xfe\xc3("  # not UTF-8 in any position
AIORMQ_READER: Any = aiormq.connection.FrameReceiver
assert AIORMQ_READER is not FrameReader


# -- building frames ---------------------------------------------------------------------------


def _text(rng: random.Random, limit: int) -> str:
    alphabet = "abcXYZ019.-_ é€中😀"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, limit)))
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(11 if depth < 2 else 8)
    if kind == 0:
        return _text(rng, 60)
    if kind == 1:
        return rng.randrange(-(2**62), 2**62)
    if kind == 2:
        return rng.random() < 0.5
    if kind == 3:
        return None
    if kind == 4:
        return rng.random()
    if kind == 5:
        return decimal.Decimal(rng.randrange(-(10**6), 10**6)) / 100
    if kind == 6:
        return datetime.datetime.fromtimestamp(rng.randrange(2**31), tz=datetime.UTC)
    if kind == 7:
        return rng.randrange(256)
    if kind == 8:
        return _table(rng, depth + 1)
    return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]


def _table(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    return {(_text(rng, 40) or "k"): _value(rng, depth) for _ in range(rng.randrange(0, 7))}


def _properties(rng: random.Random) -> commands.Basic.Properties:
    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.5 else None

    return commands.Basic.Properties(
        content_type=maybe(_text(rng, 30) or "application/x-protobuf"),
        content_encoding=maybe(_text(rng, 10) or "gzip"),
        headers=maybe(_table(rng)),
        delivery_mode=maybe(rng.choice([1, 2])),
        priority=maybe(rng.randrange(10)),
        correlation_id=maybe(_text(rng, 60) or "c"),
        reply_to=maybe(_text(rng, 60) or "r"),
        expiration=maybe(str(rng.randrange(10**6))),
        message_id=maybe(_text(rng, 60) or "m"),
        timestamp=maybe(datetime.datetime.fromtimestamp(rng.randrange(2**32), tz=datetime.UTC)),
        message_type=maybe(_text(rng, 60) or "t"),
        user_id=maybe(_text(rng, 20) or "guest"),
        app_id=maybe(_text(rng, 30) or "a"),
    )


def _method(rng: random.Random) -> Frame:
    kind = rng.randrange(10)
    if kind < 4:
        return commands.Basic.Deliver(
            _text(rng, 100) or "ctag",
            rng.randrange(2**63),
            rng.random() < 0.5,
            "".join(rng.choice("abcXYZ019.-_:") for _ in range(rng.randrange(128))),
            _text(rng, 255),
        )
    if kind == 4:
        return commands.Basic.Ack(rng.randrange(2**63), rng.random() < 0.5)
    if kind == 5:
        return commands.Basic.Nack(rng.randrange(2**63), rng.random() < 0.5, rng.random() < 0.5)
    if kind == 6:
        return commands.Basic.Return(rng.randrange(300, 600), _text(rng, 80), "", _text(rng, 255))
    if kind == 7:
        return commands.Basic.ConsumeOk(_text(rng, 100) or "ctag")
    if kind == 8:
        return commands.Channel.Close(406, _text(rng, 80), 60, 40)
    return commands.Basic.QosOk()


def _message(
    rng: random.Random, channel: int, frame_max: int = 4096, size: int | None = None
) -> list[bytes]:
    """A delivery as the broker sends it: Deliver, content header, body in frame_max pieces."""
    if size is None:
        size = rng.choice([0, 1, 5, 100, frame_max - 8, frame_max, 3 * frame_max + 7])
    body = rng.randbytes(size)
    deliver = commands.Basic.Deliver("ctag", rng.randrange(1, 2**40), False, "ex", "rk")
    frames = [pamqp.frame.marshal(deliver, channel)]
    header = ContentHeader(0, len(body), _properties(rng))
    frames.append(pamqp.frame.marshal(header, channel))
    piece = frame_max - 8
    for start in range(0, len(body), piece):
        frames.append(pamqp.frame.marshal(ContentBody(body[start : start + piece]), channel))
    return frames


HEARTBEAT = pamqp.frame.marshal(heartbeat.Heartbeat(), 0)


def _stream(rng: random.Random, count: int) -> list[bytes]:
    frames: list[bytes] = []
    for _ in range(count):
        kind = rng.randrange(8)
        channel = rng.randrange(1, 2048)
        if kind < 5:
            frames += _message(rng, channel)
        elif kind == 5:
            frames.append(HEARTBEAT)
        else:
            frames.append(pamqp.frame.marshal(_method(rng), channel))
    return frames


def _pika_header(props: pika.spec.BasicProperties, body_size: int = 5) -> bytes:
    """A content header frame with pika's encoder: octets as another client sends them."""
    payload = pika.spec.BasicProperties.encode(props)
    raw = b"".join(payload) if isinstance(payload, list) else payload
    header_payload = struct.pack(">HHQ", 60, 0, body_size) + raw
    return struct.pack(">BHI", 2, 1, len(header_payload)) + header_payload + b"\xce"


HOSTILE = [
    _pika_header(
        pika.spec.BasicProperties(
            message_id=BAD,
            type=b"chimera.v1.\xe9t\xe9",  # Latin-1
            correlation_id="ok",
            headers={"good": "fine", "nested": {BAD: "x"}, BAD: b"value \xff"},
        )
    ),
    _pika_header(pika.spec.BasicProperties(timestamp=2**63 - 5, headers={"when": "now"})),
    _pika_header(pika.spec.BasicProperties(app_id=BAD, user_id=BAD, reply_to=BAD, expiration=BAD)),
    pamqp.frame.marshal(commands.Basic.Deliver("ctag", 1, False, "ex", "ok"), 1).replace(
        b"\x02ok", b"\x02\xff\xfe"
    ),
    pamqp.frame.marshal(commands.Basic.Deliver("c\xe9", 1, True, "ex", "rk"), 1).replace(
        b"\x03c\xc3\xa9", b"\x03c\xe9!"
    ),
    pamqp.frame.marshal(commands.Basic.Return(312, "NO_ROUTE", "", "ok"), 1).replace(
        b"\x02ok", b"\x02\xff\xfe"
    ),
]


# -- comparing ---------------------------------------------------------------------------------


def _state(value: Any) -> Any:
    """What a decoded frame is: its class and its attributes' values (and their types)."""
    if isinstance(value, tuple):
        return tuple(_state(item) for item in value)
    if isinstance(value, ContentHeader):
        return (
            ContentHeader,
            value.class_id,
            value.weight,
            value.body_size,
            _state(value.properties),
        )
    if isinstance(value, ContentBody):
        return ContentBody, type(value.value), value.value
    if isinstance(value, Frame | BasicProperties):
        return type(value), [_attribute(value, name) for name in type(value).__slots__]
    if isinstance(value, heartbeat.Heartbeat | ProtocolHeader):
        return type(value), vars(value)
    return type(value), value


def _attribute(value: Any, name: str) -> tuple[str, type, Any]:
    attribute = getattr(value, name)  # set, as pamqp sets every one
    return name, type(attribute), attribute


def _expected(frames: Iterable[bytes]) -> list[Any]:
    """What each frame decodes to: pamqp's objects (leniently, for octets pamqp refuses)."""
    return [_state(lenient.unmarshal(frame)) for frame in frames]


# -- feeding readers ---------------------------------------------------------------------------


async def _read_all(make: Any, chunks: Sequence[bytes], error: BaseException | None = None) -> Any:
    """Feed ``chunks`` one read at a time, then EOF (or ``error``); all frames, then the end."""
    reader = asyncio.StreamReader()
    receiver = make(reader)
    got: list[Any] = []
    feeder = asyncio.create_task(_feed(reader, chunks, error))
    try:
        while True:
            got.append(_state(await receiver.get_frame()))
    except StopAsyncIteration:
        end: Any = "end"
    except Exception as err:
        end = (type(err), str(err))
    await feeder
    return got, end


async def _feed(reader: asyncio.StreamReader, chunks: Sequence[bytes], error: Any) -> None:
    for chunk in chunks:
        reader.feed_data(chunk)
        for _ in range(3):  # let the reader take this chunk before the next one arrives
            await asyncio.sleep(0)
    if error is not None:
        reader.set_exception(error)
    else:
        reader.feed_eof()


def _both(chunks: Sequence[bytes], error: BaseException | None = None) -> tuple[Any, Any]:
    ours = asyncio.run(_read_all(FrameReader, chunks, error))
    theirs = asyncio.run(_read_all(AIORMQ_READER, [b"".join(chunks)], error))
    return ours, theirs


# A stream that ends between frames: StopAsyncIteration if the reader sees the
# end before it asks for more, else the error for a frame of which 0 octets came.
CLEAN_ENDS = [
    "end",
    (
        AMQPConnectionError,
        "Server connection unexpectedly closed. Read 0 bytes but 1 bytes expected",
    ),
]


def _cut(data: bytes, rng: random.Random, most: int) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        step = rng.randrange(1, most + 1)
        chunks.append(data[pos : pos + step])
        pos += step
    return chunks


# -- decoding ----------------------------------------------------------------------------------


def test_seeded_frames_decode_to_what_pamqp_makes_of_them() -> None:
    rng = random.Random(20261127)
    frames = _stream(rng, 600)
    for frame in frames:
        consumed, channel, value = decode_frame(frame, 0, len(frame))
        assert consumed == len(frame)
        assert _state((consumed, channel, value)) == _state(pamqp.frame.unmarshal(frame))


def test_the_lenient_walk_makes_what_pamqp_makes_of_valid_frames() -> None:
    rng = random.Random(20261204)
    for frame in _stream(rng, 600):
        assert _state(lenient.unmarshal(frame)) == _state(pamqp.frame.unmarshal(frame))


def test_hostile_octets_decode_as_the_lenient_decoders_do() -> None:
    for frame in HOSTILE:
        assert _state(decode_frame(frame, 0, len(frame))) == _state(lenient.unmarshal(frame))
        with pytest.raises(PAMQPException):  # pamqp itself is left strict
            pamqp.frame.unmarshal(frame)
    _, _, content = decode_frame(HOSTILE[0], 0, len(HOSTILE[0]))
    assert isinstance(content, ContentHeader)
    props = content.properties
    assert octets_of(props.message_id or "") == BAD
    assert octets_of(props.message_type or "") == b"chimera.v1.\xe9t\xe9"
    assert props.headers is not None
    assert props.headers[BAD.decode("utf-8", "surrogateescape")] == b"value \xff"
    _, _, stamped = decode_frame(HOSTILE[1], 0, len(HOSTILE[1]))
    assert isinstance(stamped, ContentHeader)
    assert isinstance(stamped.properties.timestamp, RawTimestamp)
    _, _, deliver = decode_frame(HOSTILE[3], 0, len(HOSTILE[3]))
    assert isinstance(deliver, commands.Basic.Deliver)
    assert is_foreign(deliver.routing_key)
    # Written back (a dead-letter copy), the sender's octets are what goes out.
    payload = content_header(content.properties, content.body_size)
    assert struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce" == HOSTILE[0]
    assert lenient.marshal_method(deliver, 1) == HOSTILE[3]


def _outcome(decode: Any, frame: bytes) -> Any:
    try:
        return "ok", _state(decode(frame))
    except (PAMQPException, InvalidFrameError):
        return "invalid", None
    except Exception as err:
        return type(err), None


def test_damaged_frames_decode_or_fail_as_the_lenient_walk_does() -> None:
    """Truncated and mangled payloads: the generic walk's result, or the error aiormq makes
    of it (on damaged octets the lenient codecs and pamqp's own may differ)."""
    rng = random.Random(11)
    good = _stream(rng, 150) + HOSTILE
    checked = 0
    for frame in good:
        payload = frame[7:-1]
        for _ in range(12):
            damaged = bytearray(payload)
            how = rng.randrange(3)
            if how == 0 and damaged:
                del damaged[rng.randrange(len(damaged)) :]
            elif how == 1 and damaged:
                for _ in range(rng.randrange(1, 4)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            else:
                damaged += rng.randbytes(rng.randrange(1, 5))
            wire = frame[:3] + struct.pack(">I", len(damaged)) + bytes(damaged) + b"\xce"
            ours = _outcome(lambda w: decode_frame(w, 0, len(w)), wire)
            assert ours == _outcome(lenient.unmarshal, wire), wire
            checked += 1
    assert checked > 1000


def test_the_hot_frames_never_go_through_the_generic_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(12)
    hot = [*_message(rng, 1, size=10), *_message(rng, 1, size=0), *HOSTILE]
    hot += [pamqp.frame.marshal(commands.Basic.Ack(7, True), 1)]
    hot += [pamqp.frame.marshal(commands.Basic.Nack(7, False, True), 1)]
    hot += [pamqp.frame.marshal(commands.Basic.Return(312, "NO_ROUTE", "ex", "rk"), 1)]
    expected = _expected(hot)

    def refuse(data: bytes) -> Any:
        raise AssertionError("decoded by the generic walk")

    monkeypatch.setattr(lenient, "unmarshal", refuse)
    monkeypatch.setattr(pamqp.frame, "unmarshal", refuse)
    assert [_state(decode_frame(frame, 0, len(frame))) for frame in hot] == expected


def test_a_wrong_end_octet_or_an_empty_frame_is_an_invalid_frame() -> None:
    frame = pamqp.frame.marshal(commands.Basic.Ack(5), 1)
    with pytest.raises(InvalidFrameError, match="Last byte"):
        decode_frame(frame[:-1] + b"\x00", 0, len(frame))
    empty_body = struct.pack(">BHI", 3, 1, 0) + b"\xce"
    with pytest.raises(InvalidFrameError, match="frame size"):
        decode_frame(empty_body, 0, len(empty_body))


# -- reading -----------------------------------------------------------------------------------


def test_a_stream_cut_at_random_into_reads_yields_every_frame_as_aiormq_does() -> None:
    rng = random.Random(5)
    frames = _stream(rng, 120)
    data = b"".join(frames)
    expected = _expected(frames)
    for most in (1, 3, 7, 8, 64, 1000, 10**6):
        ours, theirs = _both(_cut(data, rng, most))
        assert ours == theirs
        assert ours[0] == expected
        assert ours[1] in CLEAN_ENDS


def test_every_cut_between_two_reads_yields_the_same_frames() -> None:
    rng = random.Random(6)
    frames = [*_message(rng, 3, frame_max=64), HEARTBEAT, *HOSTILE[:2]]
    data = b"".join(frames)
    expected = _expected(frames)
    for cut in range(len(data) + 1):
        chunks = [data[:cut], data[cut:]]
        got, end = asyncio.run(_read_all(FrameReader, chunks))
        assert got == expected, cut
        assert end in CLEAN_ENDS


def test_a_body_over_several_frames_and_a_frame_larger_than_a_read() -> None:
    rng = random.Random(7)
    read = frame_reader.READ_SIZE
    frames = _message(rng, 1, frame_max=read * 3, size=read * 4)  # a frame larger than a read
    frames += _message(rng, 1, frame_max=1000, size=5000)  # a body in 6 frames
    data = b"".join(frames)
    assert max(len(frame) for frame in frames) > read
    ours, theirs = _both(_cut(data, rng, 70000))
    assert ours == theirs
    assert ours[0] == _expected(frames)
    assert ours[1] in CLEAN_ENDS


def test_eof_anywhere_in_a_frame_raises_what_aiormq_raises() -> None:
    rng = random.Random(8)
    frames = [HEARTBEAT, *_message(rng, 2, frame_max=40)]
    data = b"".join(frames)
    for cut in range(len(data)):
        ours, theirs = _both([data[:cut]])
        assert ours == theirs, cut
        if cut not in {0, 8}:  # a cut between frames is a clean end
            assert ours[1][0] is AMQPConnectionError


def test_eof_mid_frame_is_a_connection_error_naming_the_octets_read() -> None:
    frame = pamqp.frame.marshal(commands.Basic.Ack(5), 1)
    got, end = asyncio.run(_read_all(FrameReader, [frame, frame[:10]]))
    assert len(got) == 1
    assert end == (
        AMQPConnectionError,
        "Server connection unexpectedly closed. Read 3 bytes but 14 bytes expected",
    )


@pytest.mark.parametrize(
    "error",
    [ConnectionResetError(104, "reset"), ConnectionRefusedError(), BrokenPipeError(), OSError(5)],
)
def test_a_broken_socket_raises_what_aiormq_raises(error: BaseException) -> None:
    frame = pamqp.frame.marshal(commands.Basic.Ack(5), 1)
    for chunks in ([frame], [frame, frame[:5]], []):
        ours, theirs = _both(chunks, error)
        assert ours == theirs
        assert ours[1][0] is AMQPConnectionError


def test_a_protocol_header_from_the_server_raises_what_aiormq_raises() -> None:
    refusal = ProtocolHeader(0, 9, 1).marshal()  # the broker wants another protocol version
    ours, theirs = _both([refusal])
    assert ours == theirs == ([], (ProtocolSyntaxError, "Unexpected AMQP protocol header"))
    # Once frames have started, the same octets are only a frame (of type "A").
    start = pamqp.frame.marshal(commands.Connection.Start(), 0)
    ours, theirs = _both([start, refusal])
    assert ours == theirs


def test_garbage_raises_what_aiormq_raises() -> None:
    rng = random.Random(9)
    for _ in range(200):
        garbage = rng.randbytes(rng.randrange(1, 40))
        if rng.random() < 0.5:
            garbage = bytes([rng.choice([1, 2, 3, 8])]) + garbage
        ours, theirs = _both([HEARTBEAT, garbage])
        assert ours == theirs, garbage


def test_frames_are_iterated_until_the_stream_ends() -> None:
    rng = random.Random(10)
    frames = _stream(rng, 30)

    async def collect() -> list[Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"".join(frames))
        reader.feed_eof()
        return [_state(item) async for item in FrameReader(reader)]

    assert asyncio.run(collect()) == _expected(frames)


# -- wiring ------------------------------------------------------------------------------------


def _reader_of(connection: Any) -> Any:
    """The reader class the connection's ``connect`` builds (from its code's globals)."""
    return inspect.unwrap(connection.connect).__globals__["FrameReceiver"]


def test_the_bus_connection_builds_the_fast_reader_and_aiormq_keeps_its_own() -> None:
    assert issubclass(frame_reader.BusConnection, aiormq.connection.Connection)
    assert frame_reader.BusConnection is not aiormq.connection.Connection
    assert _reader_of(frame_reader.BusConnection) is FrameReader
    assert _reader_of(aiormq.connection.Connection) is AIORMQ_READER
    assert aiormq.connection.FrameReceiver is AIORMQ_READER
    # aiormq's own code (the same body, wrapped as aiormq wraps it), not a copy of ours.
    ours = inspect.unwrap(frame_reader.BusConnection.connect)
    assert ours.__code__ is inspect.unwrap(aiormq.connection.Connection.connect).__code__
    assert frame_reader.BusConnection.connect is not ours


class _Module:
    """A stand-in for ``aiormq.connection`` as a future aiormq might shape it."""

    def __init__(self, receiver: Any, connection: Any = aiormq.connection.Connection) -> None:
        self.FrameReceiver = receiver
        self.Connection = connection
        self.task = cast(Any, aiormq.connection).task


def test_an_aiormq_of_another_shape_keeps_its_own_reader(caplog: pytest.LogCaptureFixture) -> None:
    class TwoArguments:
        def __init__(self, reader: Any, loop: Any) -> None: ...

        async def get_frame(self) -> Any: ...

    class NotAsync:
        def __init__(self, reader: Any) -> None: ...

        def get_frame(self) -> Any: ...

    class Connection:
        async def connect(self) -> None: ...

    shapes = [
        _Module(None),
        _Module(TwoArguments),
        _Module(NotAsync),
        _Module(AIORMQ_READER, Connection),
    ]
    caplog.set_level(logging.DEBUG, "messaging.connection")
    for module in shapes:
        receiver = module.FrameReceiver
        assert frame_reader.connection_class(module) is module.Connection
        assert module.FrameReceiver is receiver
    assert len([r for r in caplog.records if "aiormq changed" in r.getMessage()]) == len(shapes)


def test_a_stand_in_of_today_s_shape_gets_the_fast_reader() -> None:
    module = _Module(AIORMQ_READER)
    made = frame_reader.connection_class(module)
    assert made is not aiormq.connection.Connection
    assert _reader_of(made) is FrameReader
    assert module.FrameReceiver is AIORMQ_READER
