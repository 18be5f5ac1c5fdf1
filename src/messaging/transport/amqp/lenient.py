"""pamqp's frame codec, with the lenient octets of :mod:`~messaging.transport.amqp.octets`.

Why: pamqp looks its codecs up in module tables (``pamqp.decode.METHODS``,
``pamqp.encode.METHODS``, ``pamqp.decode.TABLE_MAPPING``). Registering ours
there would change every pamqp and aiormq user in the process, and a library
must not change another library's state on import. So the bus's connections
decode and encode through the functions here instead: the same walk over a
frame's attributes as pamqp's ``Frame.unmarshal``/``marshal`` and
``BasicProperties.unmarshal``, with :data:`~messaging.transport.amqp.octets.DECODERS`
and :data:`~messaging.transport.amqp.octets.ENCODERS` in place of pamqp's
tables. For valid UTF-8 the objects and octets are pamqp's own (same classes,
same values); only input pamqp would refuse decodes differently.

The hot frames (deliveries, confirms, content headers, bodies) never come
here: :mod:`~messaging.transport.amqp.frame_reader` decodes them itself.
"""

from __future__ import annotations

import struct
from typing import Any

import pamqp.frame
from pamqp import base, commands, constants, exceptions
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode
from pamqp.header import ContentHeader

from messaging.transport.amqp.octets import DECODERS, ENCODERS

_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_INDEX = struct.Struct(">I")
_CONTENT_HEADER = struct.Struct(">HHQ")


def _decode(data: bytes, data_type: str, offset: int = 0) -> tuple[int, Any]:
    """pamqp's ``decode.by_type`` over :data:`DECODERS`."""
    if data_type == "bit":
        return pamqp_decode.bit(data, offset)
    decoder = DECODERS.get(data_type)
    if decoder is None:
        raise ValueError(f"Unknown type: {data_type}")
    result: tuple[int, Any] = decoder(data)
    return result


def _encode(value: Any, data_type: str) -> bytes:
    """pamqp's ``encode.by_type`` over :data:`ENCODERS`."""
    try:
        encoder = ENCODERS[data_type]
    except KeyError as err:
        raise TypeError(f"Unknown type: {data_type}") from err
    encoded: bytes = encoder(value)
    return encoded


def unmarshal_method(frame_data: bytes) -> base.Frame:
    """A method frame's payload into pamqp's object (``Frame.unmarshal``'s walk)."""
    index = _METHOD_INDEX.unpack_from(frame_data, 0)[0]
    try:
        method: base.Frame = commands.INDEX_MAPPING[index]()
    except KeyError as err:
        raise exceptions.UnmarshalingException(
            "Unknown", f"Unknown method index: {index!s}"
        ) from err
    data = frame_data[4:]
    try:
        offset, in_bits = 0, False
        for name in method.__slots__:
            data_type = method.amqp_type(name)
            if in_bits and (data_type != "bit" or offset == 8):
                data, offset, in_bits = data[1:], 0, False
            consumed, value = _decode(data, data_type, offset)
            if data_type == "bit":
                offset, in_bits, consumed = offset + 1, True, 0
            setattr(method, name, value)
            if consumed:
                data = data[consumed:]
    except (struct.error, ValueError) as err:
        raise exceptions.UnmarshalingException(method, err) from err
    return method


def unmarshal_header(frame_data: bytes) -> ContentHeader:
    """A content header frame's payload into pamqp's object (``ContentHeader.unmarshal``)."""
    content = ContentHeader()
    try:
        content.class_id, content.weight, content.body_size = _CONTENT_HEADER.unpack_from(
            frame_data, 0
        )
        consumed, flags = ContentHeader._get_flags(frame_data[12:])
        data = frame_data[12 + consumed :]
        props = content.properties
        for name in props.__slots__:
            if flags & props.flags[name]:
                consumed, value = _decode(data, props.amqp_type(name))
                setattr(props, name, value)
                data = data[consumed:]
    except (struct.error, ValueError) as err:
        raise exceptions.UnmarshalingException("ContentHeader", err) from err
    return content


def unmarshal(data: bytes) -> tuple[int, int, pamqp.frame.FrameTypes]:
    """``pamqp.frame.unmarshal``, with method and header frames decoded as above.

    Raises pamqp's :class:`~pamqp.exceptions.UnmarshalingException` as pamqp does.
    """
    try:
        frame_type, channel, size = _FRAME_HEADER.unpack_from(data, 0)
    except struct.error:
        frame_type = size = 0
    end = size + 8
    if (
        frame_type in (constants.FRAME_METHOD, constants.FRAME_HEADER)
        and size
        and end <= len(data)
        and data[end - 1] == constants.FRAME_END
        and not data.startswith(constants.AMQP)
    ):
        payload = data[7 : end - 1]
        if frame_type == constants.FRAME_METHOD:
            return end, channel, unmarshal_method(payload)
        return end, channel, unmarshal_header(payload)
    # A protocol header, heartbeat, body or a broken frame: no short strings or
    # tables in them, pamqp's own result or error.
    return pamqp.frame.unmarshal(data)


def marshal_method(method: base.Frame, channel: int) -> bytes:
    """A whole method frame for ``method`` (``pamqp.frame.marshal``'s octets), validated
    as pamqp validates it, its short strings and tables encoded as above."""
    method.validate()
    parts = [_METHOD_INDEX.pack(method.index)]
    bits, offset, in_bits = 0, 0, False
    for name in method.__slots__:
        data_type = method.amqp_type(name)
        value = getattr(method, name, 0)
        if data_type == "bit":
            if not in_bits:
                bits, offset, in_bits = 0, 0, True
            bits = pamqp_encode.bit(value, bits, offset)
            offset += 1
            if offset == 8:
                parts.append(pamqp_encode.octet(bits))
                in_bits = False
            continue
        if in_bits:
            parts.append(pamqp_encode.octet(bits))
            in_bits = False
        parts.append(_encode(value, data_type))
    if in_bits:
        parts.append(pamqp_encode.octet(bits))
    payload = b"".join(parts)
    return b"".join(
        (_FRAME_HEADER.pack(constants.FRAME_METHOD, channel, len(payload)), payload, b"\xce")
    )


class Properties(commands.Basic.Properties):
    """pamqp's ``Basic.Properties`` that marshals with the lenient encoders.

    For aiormq's own ``basic_publish`` (the publish path when the fast writer
    cannot be used): the copy of a message another client sent keeps the
    sender's octets without pamqp's tables being changed.
    """

    # No __slots__ here: pamqp walks ``self.__slots__``, which must stay the base's.

    def encode_property(self, name: str, value: Any) -> bytes:
        return _encode(value, self.amqp_type(name))


__all__ = ["Properties", "marshal_method", "unmarshal", "unmarshal_header", "unmarshal_method"]
