"""The bus's message properties as the AMQP client's, for the wire."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from pamqp import commands as spec

from messaging.transport.amqp.lenient import Properties
from messaging.transport.amqp.octets import encode_field_table, encode_short_str, encode_timestamp
from messaging.transport.base import MessageProperties

_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)


def amqp_properties(props: MessageProperties) -> spec.Basic.Properties:
    """``props`` as the client's properties (as they are when they already are lenient).

    Of :class:`~messaging.transport.amqp.lenient.Properties`, which marshal
    foreign octets back as they arrived without pamqp's tables being changed.
    """
    if isinstance(props, Properties):
        return props
    headers = props.headers
    if (
        isinstance(props, spec.Basic.Properties)
        or props.cluster_id
        or props.delivery_mode not in (None, 1, 2)
    ):
        # A copy of what another client sent: the constructor would refuse
        # values the broker passes on, and leave the message unsettled.
        odd = Properties()
        for name in _PROPERTY_NAMES:
            setattr(odd, name, getattr(props, name))
        return odd
    return Properties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers if headers is None or isinstance(headers, dict) else dict(headers),
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        expiration=props.expiration,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.message_type,
        user_id=props.user_id,
        app_id=props.app_id,
        cluster_id=props.cluster_id or "",
    )


_BASIC_CLASS = struct.Struct(">HxxQ")  # class id (60), weight (0), body size
_FLAGS = struct.Struct(">H")
_OCTET = struct.Struct(">B")
_TIMESTAMP = struct.Struct(">Q")

_SHORTSTR, _TABLE, _OCTET_VALUE, _TIMESTAMP_VALUE = range(4)
_LAYOUT = (  # basic.properties in wire order: (attribute, flag bit, AMQP type)
    ("content_type", 0x8000, _SHORTSTR),
    ("content_encoding", 0x4000, _SHORTSTR),
    ("headers", 0x2000, _TABLE),
    ("delivery_mode", 0x1000, _OCTET_VALUE),
    ("priority", 0x0800, _OCTET_VALUE),
    ("correlation_id", 0x0400, _SHORTSTR),
    ("reply_to", 0x0200, _SHORTSTR),
    ("expiration", 0x0100, _SHORTSTR),
    ("message_id", 0x0080, _SHORTSTR),
    ("timestamp", 0x0040, _TIMESTAMP_VALUE),
    ("message_type", 0x0020, _SHORTSTR),
    ("user_id", 0x0010, _SHORTSTR),
    ("app_id", 0x0008, _SHORTSTR),
    ("cluster_id", 0x0004, _SHORTSTR),
)


def content_header(props: MessageProperties, body_size: int) -> bytes:
    """The payload of the content header frame for ``props``, as pamqp marshals
    ``ContentHeader(0, body_size, amqp_properties(props))``, byte for byte.

    Without building pamqp's properties object on the way: the publish path
    calls this once per message (3.6 µs, against 8.7 µs through pamqp; the
    unrolled form this loop replaced took 2.8 µs).
    The same property flags, in the same order, a property present when it is
    neither None nor ``""`` (as pamqp's ``BasicProperties.marshal``), each
    value through the encoder for its AMQP type (pamqp's, or
    :mod:`~messaging.transport.amqp.octets`' lenient one for short strings,
    tables and timestamps), so a value pamqp refuses raises the same
    ``TypeError``. ``tests/unit`` holds it against pamqp.
    """
    shortstr = encode_short_str
    flags = 0
    parts: list[bytes] = []
    for name, flag, kind in _LAYOUT:
        value: Any = getattr(props, name)
        if value is None:
            continue
        if kind == _SHORTSTR:
            if value == "":
                continue
            parts.append(shortstr(value))
        elif kind == _TABLE:
            parts.append(encode_field_table(value if isinstance(value, dict) else dict(value)))
        elif kind == _OCTET_VALUE:
            parts.append(_octet(value))
        elif value.__class__ is datetime and value.tzinfo is UTC:  # what the bus stamps
            parts.append(_TIMESTAMP.pack(int(value.timestamp())))  # as pamqp packs it
        else:
            parts.append(encode_timestamp(value))
        flags |= flag
    return b"".join((_BASIC_CLASS.pack(60, body_size), _FLAGS.pack(flags), *parts))


def _octet(value: Any) -> bytes:
    if not isinstance(value, int):  # as pamqp's encode.octet
        raise TypeError(f"int required, received {type(value)}")
    return _OCTET.pack(value)
