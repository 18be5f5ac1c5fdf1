"""AMQP frames read from the socket in large chunks, with fast decoders for the hot frames.

Why: aiormq's ``FrameReceiver`` makes, for every frame, a ``BytesIO``, takes
an ``asyncio.Lock`` and awaits three ``readexactly`` calls, then decodes
through pamqp's generic, attribute-by-attribute codec. Profiling the
``consume100`` bench row (``bus aio+uvloop``: consume, protobuf decode, ack at
prefetch 100) put 31% of the process in ``FrameReceiver.get_frame``, 21% of it
in pamqp's ``frame.unmarshal`` (issue 11). A message is three frames
(``Basic.Deliver``, content header, body), so that cost is paid three times a
message.

:class:`FrameReader` is a drop-in replacement: the same async iterator of
``(octets consumed, channel, frame)`` tuples, as ``pamqp.frame.unmarshal``
returns them, and the same aiormq exceptions on EOF, reset and invalid frames
(so reconnecting works as before). It reads whatever the socket has (up to
:data:`READ_SIZE`) and decodes each complete frame in that buffer without
awaiting again. ``Basic.Deliver``, ``Basic.Ack``/``Nack``/``Return``, content
headers and bodies are decoded here into the very objects pamqp builds (same
classes, same attribute values), with the lenient short strings, tables and
timestamps of :mod:`messaging.transport.amqp.octets`; any other frame, and any
of those that does not decode here, goes to
:func:`messaging.transport.amqp.lenient.unmarshal` (pamqp's walk with the same
lenient codecs), so its result or its error is pamqp's own.

Only the bus's connections read this way: :data:`BusConnection` is aiormq's
connection whose ``connect`` builds a :class:`FrameReader` where aiormq's
builds its ``FrameReceiver``. aiormq's module and pamqp's tables are left as
they are, so another aiormq user in the process is not affected. If aiormq
changes shape (no ``FrameReceiver`` global, another constructor, ``connect``
no longer using it), :data:`BusConnection` is aiormq's own (logged at DEBUG):
slower, the same frames.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import struct
import types
from collections.abc import Callable
from typing import Any

import aiormq.connection
import pamqp.frame
from aiormq.exceptions import AMQPConnectionError, InvalidFrameError, ProtocolSyntaxError
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

from messaging.transport.amqp import lenient
from messaging.transport.amqp.octets import (
    decode_field_table,
    decode_short_str_at,
    decode_timestamp,
)

log = logging.getLogger("messaging.connection")

ReceivedFrame = tuple[int, int, pamqp.frame.FrameTypes]

READ_SIZE = 262144
"""Most octets taken from the socket's buffer at once (a larger frame is awaited whole)."""

_FRAME_HEADER = struct.Struct(">BHI")  # type, channel, payload size
_METHOD_INDEX = struct.Struct(">I")
_LONGLONG = struct.Struct(">q")  # pamqp's "longlong": signed
_SHORT = struct.Struct(">H")  # pamqp's "short": unsigned
_CONTENT_HEADER = struct.Struct(">HHQH")  # class id, weight, body size, first flag word
_FRAME_END = 0xCE

_Deliver = commands.Basic.Deliver
_Ack = commands.Basic.Ack
_Nack = commands.Basic.Nack
_Return = commands.Basic.Return
_Properties = commands.Basic.Properties


# -- decoders: a frame's payload (after the 7-octet frame header) into pamqp's object ---------
#
# Each raises (anything) where it cannot decode; the frame then goes to pamqp,
# which decodes it or raises its own error. None may accept what pamqp refuses.


def _deliver(payload: bytes) -> _Deliver:
    offset, consumer_tag = decode_short_str_at(payload, 4)
    delivery_tag = _LONGLONG.unpack_from(payload, offset)[0]
    bits = payload[offset + 8]
    offset, exchange = decode_short_str_at(payload, offset + 9)
    _, routing_key = decode_short_str_at(payload, offset)
    frame = _Deliver.__new__(_Deliver)
    frame.consumer_tag = consumer_tag
    frame.delivery_tag = delivery_tag
    frame.redelivered = bool(bits & 1)
    frame.exchange = exchange
    frame.routing_key = routing_key
    return frame


def _ack(payload: bytes) -> _Ack:
    delivery_tag = _LONGLONG.unpack_from(payload, 4)[0]
    bits = payload[12]
    frame = _Ack.__new__(_Ack)
    frame.delivery_tag = delivery_tag
    frame.multiple = bool(bits & 1)
    return frame


def _nack(payload: bytes) -> _Nack:
    delivery_tag = _LONGLONG.unpack_from(payload, 4)[0]
    bits = payload[12]
    frame = _Nack.__new__(_Nack)
    frame.delivery_tag = delivery_tag
    frame.multiple = bool(bits & 1)
    frame.requeue = bool(bits & 2)
    return frame


def _return(payload: bytes) -> _Return:
    reply_code = _SHORT.unpack_from(payload, 4)[0]
    offset, reply_text = decode_short_str_at(payload, 6)
    offset, exchange = decode_short_str_at(payload, offset)
    _, routing_key = decode_short_str_at(payload, offset)
    frame = _Return.__new__(_Return)
    frame.reply_code = reply_code
    frame.reply_text = reply_text
    frame.exchange = exchange
    frame.routing_key = routing_key
    return frame


_METHODS: dict[int, Callable[[bytes], Any]] = {
    _Deliver.index: _deliver,
    _Ack.index: _ack,
    _Nack.index: _nack,
    _Return.index: _return,
}


def _content_header(payload: bytes) -> ContentHeader:
    class_id, weight, body_size, flags = _CONTENT_HEADER.unpack_from(payload, 0)
    if flags & 1:  # a second flag word: no property uses one; pamqp's loop handles it
        raise ValueError("more than one property flag word")
    props = _Properties.__new__(_Properties)
    offset = 14
    # In the order of Basic.Properties' flags, as pamqp decodes them.
    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: Any = None
    message_type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id = ""
    if flags & 0x8000:
        offset, content_type = decode_short_str_at(payload, offset)
    if flags & 0x4000:
        offset, content_encoding = decode_short_str_at(payload, offset)
    if flags & 0x2000:
        consumed, headers = decode_field_table(payload[offset:])
        offset += consumed
    if flags & 0x1000:
        delivery_mode = payload[offset]
        offset += 1
    if flags & 0x0800:
        priority = payload[offset]
        offset += 1
    if flags & 0x0400:
        offset, correlation_id = decode_short_str_at(payload, offset)
    if flags & 0x0200:
        offset, reply_to = decode_short_str_at(payload, offset)
    if flags & 0x0100:
        offset, expiration = decode_short_str_at(payload, offset)
    if flags & 0x0080:
        offset, message_id = decode_short_str_at(payload, offset)
    if flags & 0x0040:
        consumed, timestamp = decode_timestamp(payload[offset : offset + 8])
        offset += consumed
    if flags & 0x0020:
        offset, message_type = decode_short_str_at(payload, offset)
    if flags & 0x0010:
        offset, user_id = decode_short_str_at(payload, offset)
    if flags & 0x0008:
        offset, app_id = decode_short_str_at(payload, offset)
    if flags & 0x0004:
        offset, cluster_id = decode_short_str_at(payload, offset)
    props.content_type = content_type
    props.content_encoding = content_encoding
    props.headers = headers
    props.delivery_mode = delivery_mode
    props.priority = priority
    props.correlation_id = correlation_id
    props.reply_to = reply_to
    props.expiration = expiration
    props.message_id = message_id
    props.timestamp = timestamp  # a datetime, or octets' RawTimestamp
    props.message_type = message_type
    props.user_id = user_id
    props.app_id = app_id
    props.cluster_id = cluster_id
    content = ContentHeader.__new__(ContentHeader)
    content.class_id = class_id
    content.weight = weight
    content.body_size = body_size
    content.properties = props
    return content


def decode_frame(data: bytes, start: int, end: int) -> ReceivedFrame:
    """Decode the one whole frame in ``data[start:end]`` as ``pamqp.frame.unmarshal`` does.

    Raises aiormq's :class:`~aiormq.exceptions.InvalidFrameError` where pamqp
    raises its own errors (as aiormq's reader does).
    """
    frame_type, channel, size = _FRAME_HEADER.unpack_from(data, start)
    if size and data[end - 1] == _FRAME_END:
        try:
            if frame_type == 3:  # body
                return size + 8, channel, ContentBody(data[start + 7 : end - 1])
            if frame_type == 1:  # method
                decoder = _METHODS.get(_METHOD_INDEX.unpack_from(data, start + 7)[0])
                if decoder is not None:
                    return size + 8, channel, decoder(data[start + 7 : end - 1])
            elif frame_type == 2:  # content header
                return size + 8, channel, _content_header(data[start + 7 : end - 1])
        except Exception:
            pass  # pamqp decides below: its result or its error
    try:
        return lenient.unmarshal(data[start:end])
    except PAMQPException as err:
        raise InvalidFrameError(str(err)) from err


# -- the reader --------------------------------------------------------------------------------


class FrameReader:
    """aiormq's ``FrameReceiver``, reading the socket in chunks; see the module docstring."""

    __slots__ = ("_data", "_pos", "reader", "started")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.started = False
        self._data = b""  # read, not yet decoded from self._pos on
        self._pos = 0

    def __aiter__(self) -> FrameReader:
        return self

    async def __anext__(self) -> ReceivedFrame:
        return await self.get_frame()

    async def get_frame(self) -> ReceivedFrame:
        data = self._data
        pos = self._pos
        if len(data) - pos >= 8:  # a whole frame already read: no await
            size = _FRAME_HEADER.unpack_from(data, pos)[2]
            end = pos + size + 8
            if end <= len(data):
                self._pos = end
                return decode_frame(data, pos, end)
        return await self._read_frame()

    async def _read_frame(self) -> ReceivedFrame:
        """Read until one whole frame is buffered, then decode it (aiormq's errors on the way)."""
        reader = self.reader
        if self._pos == len(self._data):
            self._data, self._pos = b"", 0
            if reader.at_eof():  # as aiormq's: a clean end between frames ends the iteration
                raise StopAsyncIteration
        while True:
            data = self._data
            pos = self._pos
            buffered = len(data) - pos
            need = 8  # the 7-octet frame header and the end octet of an empty frame
            if buffered >= 7:
                if not self.started:
                    if data.startswith(b"AMQP", pos):
                        raise ProtocolSyntaxError("Unexpected AMQP protocol header")
                    self.started = True
                need = _FRAME_HEADER.unpack_from(data, pos)[2] + 8
                if buffered >= need:
                    self._pos = pos + need
                    return decode_frame(data, pos, pos + need)
            missing = need - buffered
            try:
                if missing > READ_SIZE:  # one large frame: wait for all of it at once
                    chunk = await reader.readexactly(missing)
                else:
                    chunk = await reader.read(READ_SIZE)
            except asyncio.IncompleteReadError as err:
                raise _closed(buffered + len(err.partial), need) from err
            except ConnectionRefusedError as err:
                raise AMQPConnectionError(f"Server connection refused: {err!r}") from err
            except ConnectionResetError as err:
                raise AMQPConnectionError(f"Server connection reset: {err!r}") from err
            except ConnectionError as err:
                raise AMQPConnectionError(f"Server connection error: {err!r}") from err
            except OSError as err:
                raise AMQPConnectionError(f"Server communication error: {err!r}") from err
            if not chunk:
                raise _closed(buffered, need)
            self._data = data[pos:] + chunk if buffered else chunk
            self._pos = 0


def _closed(buffered: int, need: int) -> AMQPConnectionError:
    """The error aiormq's reader raises when the stream ends ``buffered`` octets into a frame."""
    # aiormq reads a frame in three steps: 1 octet, 6 octets, then the rest.
    if buffered < 1:
        read, expected = 0, 1
    elif buffered < 7:
        read, expected = buffered - 1, 6
    else:
        read, expected = buffered - 7, need - 7
    return AMQPConnectionError(
        f"Server connection unexpectedly closed. Read {read} bytes but {expected} bytes expected"
    )


# -- wiring ------------------------------------------------------------------------------------


def connection_class(module: Any = aiormq.connection) -> type[aiormq.connection.Connection]:
    """aiormq's ``Connection`` whose ``connect`` reads with :class:`FrameReader`, or aiormq's
    own class (logged at DEBUG) when aiormq's shape is not the one this was written for.

    The subclass's ``connect`` is aiormq's own code (the same function body,
    the same ``@task`` wrapper) run against a copy of ``module``'s namespace in
    which ``FrameReceiver`` is :class:`FrameReader`: nothing of aiormq's is
    rebound, and a plain ``aiormq.connect`` keeps aiormq's reader. ``module``
    is ``aiormq.connection`` (given only by tests).
    """
    base_class = getattr(module, "Connection", None)
    if not isinstance(base_class, type):
        log.debug("aiormq changed (no aiormq.connection.Connection class)")
        return aiormq.connection.Connection
    reason = _incompatible(module, getattr(module, "FrameReceiver", None))
    wrapped = base_class.__dict__.get("connect")
    raw = inspect.unwrap(wrapped) if callable(wrapped) else None
    wrapper = getattr(module, "task", None)
    if not reason and raw is not wrapped and getattr(wrapped, "__wrapped__", None) is not raw:
        reason = "Connection.connect is wrapped more than once"
    if not reason and raw is not wrapped and not callable(wrapper):
        reason = "no aiormq.connection.task to wrap connect with"
    if reason or not isinstance(raw, types.FunctionType):
        log.debug("aiormq changed (%s): frames are read by aiormq's own reader", reason)
        return base_class
    namespace = dict(vars(module))
    namespace["FrameReceiver"] = FrameReader
    connect = types.FunctionType(
        raw.__code__, namespace, raw.__name__, raw.__defaults__, raw.__closure__
    )
    connect.__kwdefaults__ = raw.__kwdefaults__
    connect.__qualname__ = raw.__qualname__
    connect.__doc__ = raw.__doc__
    return type(
        "Connection",
        (base_class,),
        {
            "__module__": __name__,
            "__doc__": "aiormq's connection, reading frames with FrameReader.",
            "connect": connect if raw is wrapped else wrapper(connect),  # type: ignore[misc]
        },
    )


def _incompatible(module: Any, current: Any) -> str:
    if current is None:
        return "no aiormq.connection.FrameReceiver"
    try:
        params = list(inspect.signature(current).parameters)
    except (TypeError, ValueError):
        return "FrameReceiver has no signature"
    if params != ["reader"]:
        return f"FrameReceiver takes {params}"
    if not inspect.iscoroutinefunction(getattr(current, "get_frame", None)):
        return "FrameReceiver.get_frame is not a coroutine function"
    connect = getattr(getattr(module, "Connection", None), "connect", None)
    code = getattr(inspect.unwrap(connect), "__code__", None) if callable(connect) else None
    if code is None or "FrameReceiver" not in code.co_names:
        return "Connection.connect does not build a FrameReceiver"
    return ""


BusConnection = connection_class()
"""The aiormq connection class the bus's connections are made of (see :func:`connection_class`)."""


__all__ = ["READ_SIZE", "BusConnection", "FrameReader", "connection_class", "decode_frame"]
