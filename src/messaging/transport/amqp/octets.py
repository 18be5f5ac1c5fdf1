"""AMQP short strings are octets: decode what any client sends, and send it back unchanged.

AMQP 0-9-1 short strings (``message_id``, ``type``, ``correlation_id``, a
routing key, a header *key*, ...) are up to 255 octets with no encoding. Most
clients write UTF-8, some write Latin-1 or raw bytes, and the broker passes
them on untouched. pamqp decodes them as UTF-8 and raises on anything else,
which makes aiormq drop the whole connection; the broker then redelivers the
same message to the next connection, for ever, and every message behind it
waits.

Here a short string that is not UTF-8 decodes with ``surrogateescape``: each
octet that is not part of valid UTF-8 becomes a lone surrogate (U+DC80 to
U+DCFF), so the value is a ``str`` as pamqp's types promise, is recognisably
foreign (:func:`is_foreign`), and turns back into exactly the octets that
arrived (:func:`octets_of`). The encoders below write such a value back as
those octets, so a dead-letter copy carries the sender's bytes (and a long
string that was not UTF-8, which pamqp hands over as ``bytes``, goes back as
the same long string). For valid UTF-8 every function here produces exactly
what pamqp's own produces (except that a header key longer than 128 octets is
kept whole, as it arrived, where pamqp would cut it).

Timestamps are treated alike: a 64-bit value no ``datetime`` can hold (which
pamqp also raises on) decodes to a :class:`RawTimestamp` and goes back as the
same 64 bits.

The decoders are plain functions so that the bus's frame reader
(:mod:`~messaging.transport.amqp.frame_reader`) and its codec for the other
frames (:mod:`~messaging.transport.amqp.lenient`) reuse them. Nothing here
touches pamqp's own codec tables: a plain aiormq or pamqp user in the same
process keeps pamqp's strict UTF-8.
"""

from __future__ import annotations

import datetime
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pamqp import common
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

from messaging.wiretext import ERRORS as _ERRORS
from messaging.wiretext import RawTimestamp, printable

_BYTE = struct.Struct(">B")
_LONG = struct.Struct(">I")
_LONGLONG = struct.Struct(">Q")


# -- decoding ----------------------------------------------------------------


def decode_short_str(data: bytes) -> tuple[int, str]:
    """Decode one short string at the start of ``data``: (octets consumed, value)."""
    return decode_short_str_at(data, 0)


def decode_short_str_at(data: bytes, offset: int) -> tuple[int, str]:
    """Decode one short string at ``data[offset:]``: (offset just past it, value).

    The same as :func:`decode_short_str` without copying the rest of ``data``
    first (for a frame reader that decodes a whole frame by offsets).
    """
    try:
        length = _BYTE.unpack_from(data, offset)[0]
    except struct.error as err:
        raise ValueError("Could not unpack short string value") from err
    end = offset + 1 + length
    if end > len(data):
        raise ValueError("Short string length exceeds available data")
    return end, data[offset + 1 : end].decode("utf-8", _ERRORS)


def decode_field_table(data: bytes) -> tuple[int, common.FieldTable]:
    """Decode one field table at the start of ``data``: (octets consumed, table).

    Keys are short strings decoded as by :func:`decode_short_str`; values
    as by :func:`decode_table_value` (nested tables and arrays come back here).
    """
    try:
        length = _LONG.unpack_from(data, 0)[0]
    except struct.error as err:
        raise ValueError("Could not unpack field table") from err
    end = 4 + length
    if end > len(data):
        raise ValueError("Field table length exceeds available data")
    offset = 4
    table: dict[str, common.FieldValue] = {}
    while offset < end:
        consumed, key = decode_short_str(data[offset:end])
        offset += consumed
        consumed, value = decode_table_value(data[offset:end])
        if consumed == 0:
            raise ValueError(f"Field table value missing for key {printable(key)}")
        offset += consumed
        table[key] = value
    return end, table


def decode_field_array(data: bytes) -> tuple[int, common.FieldArray]:
    """Decode one field array at the start of ``data``, as pamqp does, with our values."""
    try:
        length = _LONG.unpack_from(data, 0)[0]
    except struct.error as err:
        raise ValueError("Could not unpack data") from err
    end = 4 + length
    if end > len(data):
        raise ValueError("Field array length exceeds available data")
    offset = 4
    items: list[common.FieldValue] = []
    while offset < end:
        consumed, value = decode_table_value(data[offset:end])
        if consumed == 0:
            raise ValueError("Field array value missing")
        offset += consumed
        items.append(value)
    return end, items


def decode_table_value(data: bytes) -> tuple[int, common.FieldValue]:
    """Decode one tagged table value (pamqp's ``embedded_value``): (octets consumed, value).

    Tables, arrays and timestamps decode here (leniently, at any depth); every
    other type through pamqp's own decoder for its tag.
    """
    if not data:
        return 0, None
    decoder = _TABLE_DECODERS.get(data[0:1])
    if decoder is None:
        raise ValueError(f"Unknown type: {data[:1]!r}")
    try:
        consumed, value = decoder(data[1:])
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err
    return consumed + 1, value


def decode_timestamp(data: bytes) -> tuple[int, datetime.datetime | RawTimestamp]:
    """Decode a timestamp as pamqp does; one no ``datetime`` can hold as :class:`RawTimestamp`."""
    try:
        return pamqp_decode.timestamp(data)
    except (ValueError, OverflowError, OSError):
        try:
            raw = _LONGLONG.unpack_from(data, 0)[0]
        except struct.error as err:
            raise ValueError("Could not unpack timestamp value") from err
        return 8, RawTimestamp(raw)


# -- encoding ----------------------------------------------------------------


def encode_timestamp(value: datetime.datetime | time.struct_time | RawTimestamp) -> bytes:
    """Encode a timestamp as pamqp does; a :class:`RawTimestamp` as its own 64 bits."""
    if isinstance(value, RawTimestamp):
        return _LONGLONG.pack(value)
    return pamqp_encode.timestamp(value)


def encode_short_str(value: str) -> bytes:
    """Encode a short string; escaped octets go back as the octets they were."""
    if not isinstance(value, str):
        raise TypeError(f"str required, received {type(value)}")
    raw = value.encode("utf-8", _ERRORS)
    if len(raw) > 255:
        raise TypeError("string exceeds maximum length of 255 bytes")
    return _BYTE.pack(len(raw)) + raw


def encode_field_table(table: Mapping[str, Any]) -> bytes:
    """Encode a field table as pamqp does, keeping foreign keys and long strings as octets."""
    if not table:
        return _LONG.pack(0)
    if not isinstance(table, Mapping):
        raise TypeError(f"dict required, received {type(table)}")
    parts: list[bytes] = []
    for key, value in sorted(table.items(), key=_first):  # in key order, as pamqp writes them
        parts.append(encode_short_str(key))
        try:
            parts.append(encode_table_value(value))
        except TypeError as err:
            raise TypeError(f"{printable(key)} error: {err}") from err
    body = b"".join(parts)
    return _LONG.pack(len(body)) + body


def encode_table_value(value: Any) -> bytes:
    """One tagged table value; ``bytes`` (a long string that was not UTF-8) as a long string."""
    if isinstance(value, bytes):
        return b"S" + _LONG.pack(len(value)) + value
    if isinstance(value, RawTimestamp):
        return b"T" + encode_timestamp(value)
    if isinstance(value, Mapping):
        return b"F" + encode_field_table(value)
    if isinstance(value, Sequence) and not isinstance(value, str | bytearray):
        items = b"".join(encode_table_value(item) for item in value)
        return b"A" + _LONG.pack(len(items)) + items
    return pamqp_encode.encode_table_value(value)


def _first(item: tuple[str, Any]) -> str:
    return item[0]


_TABLE_DECODERS: dict[bytes, Any] = {
    **pamqp_decode.TABLE_MAPPING,  # a copy: pamqp's table is left as it is
    b"F": decode_field_table,
    b"A": decode_field_array,
    b"T": decode_timestamp,
}
"""Table value decoders by tag: pamqp's, with tables, arrays and timestamps as above."""

DECODERS: dict[str, Any] = {
    **pamqp_decode.METHODS,
    "shortstr": decode_short_str,
    "table": decode_field_table,
    "array": decode_field_array,
    "timestamp": decode_timestamp,
}
"""Decoders by AMQP type name (pamqp's ``decode.METHODS``, with the ones above)."""

ENCODERS: dict[str, Any] = {
    **pamqp_encode.METHODS,
    "shortstr": encode_short_str,
    "table": encode_field_table,
    "timestamp": encode_timestamp,
}
"""Encoders by AMQP type name (pamqp's ``encode.METHODS``, with the ones above)."""
