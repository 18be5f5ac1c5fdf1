"""Short strings and tables as octets, at frame level, against pamqp's own codec and pika's.

Frames go through the bus's own codec (:mod:`messaging.transport.amqp.lenient`);
pamqp's tables are not changed (``test_no_patching.py``).
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pamqp.frame
import pika.spec
import pytest
from pamqp import commands, header
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

from messaging.transport.amqp import lenient
from messaging.transport.amqp.octets import (
    decode_field_table,
    decode_short_str,
    encode_field_table,
    encode_short_str,
)
from messaging.transport.amqp.properties import content_header
from messaging.wiretext import foreign_fields, is_foreign, octets_of, printable


def _marshal_header(content: header.ContentHeader, channel: int) -> bytes:
    """The content header frame the bus writes for ``content`` (its publish path's encoder)."""
    payload = content_header(content.properties, content.body_size)
    return struct.pack(">BHI", 2, channel, len(payload)) + payload + b"\xce"


BAD = b"\xff\xfe\xc3("


def _random_text(rng: random.Random, limit: int) -> str:
    alphabet = "abcXYZ019.-_ é€中😀"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, limit)))
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def _random_table(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for _ in range(rng.randrange(0, 6)):
        kind = rng.randrange(6 if depth < 2 else 4)
        value: Any
        if kind == 0:
            value = _random_text(rng, 40)
        elif kind == 1:
            value = rng.randrange(-(2**40), 2**40)
        elif kind == 2:
            value = rng.random() < 0.5
        elif kind == 3:
            value = None
        elif kind == 4:
            value = _random_table(rng, depth + 1)
        else:
            value = [rng.randrange(100), _random_text(rng, 10)]
        table[_random_text(rng, 128) or "k"] = value  # pamqp cuts longer keys; we keep them
    return table


def test_valid_utf8_encodes_exactly_as_pamqp_does() -> None:
    rng = random.Random(8)
    for _ in range(300):
        text = _random_text(rng, 255)
        assert encode_short_str(text) == pamqp_encode.short_string(text)
        table = _random_table(rng)
        assert encode_field_table(table) == pamqp_encode.field_table(table)


def test_valid_utf8_decodes_exactly_as_pamqp_does() -> None:
    rng = random.Random(9)
    for _ in range(300):
        text = _random_text(rng, 255)
        wire = pamqp_encode.short_string(text) + b"rest"
        assert decode_short_str(wire) == pamqp_decode.short_str(wire)
        table = _random_table(rng)
        wire = pamqp_encode.field_table(table)
        assert decode_field_table(wire) == pamqp_decode.field_table(wire)


def _content_header_from_pika(props: pika.spec.BasicProperties) -> bytes:
    """A content header frame with pika's encoder: octets as another client sends them."""
    payload = pika.spec.BasicProperties.encode(props)
    body = b"".join(payload) if isinstance(payload, list) else payload
    header_payload = struct.pack(">HHQ", 60, 0, 5) + body
    return struct.pack(">BHI", 2, 1, len(header_payload)) + header_payload + b"\xce"


def test_a_content_header_with_foreign_octets_unmarshals_and_marshals_back_byte_for_byte() -> None:
    frame = _content_header_from_pika(
        pika.spec.BasicProperties(
            message_id=BAD,
            type=b"chimera.v1.\xe9t\xe9",  # Latin-1
            correlation_id="ok",
            # pamqp writes a table in key order: so does pika here, to compare bytes.
            headers={"good": "fine", "nested": {BAD: "x"}, BAD: b"value \xff"},
        )
    )
    consumed, channel, content = lenient.unmarshal(frame)
    assert consumed == len(frame)
    assert channel == 1
    assert isinstance(content, header.ContentHeader)
    props = content.properties
    assert is_foreign(props.message_id)
    assert octets_of(props.message_id or "") == BAD
    assert octets_of(props.message_type or "") == b"chimera.v1.\xe9t\xe9"
    assert props.correlation_id == "ok"
    assert not is_foreign(props.correlation_id)
    assert props.headers is not None
    assert props.headers["good"] == "fine"
    assert sorted(foreign_fields(props)) == sorted(
        [
            "message_id",
            "message_type",
            "headers[\\xff\\xfe\\xc3(]",
            "headers[nested][\\xff\\xfe\\xc3(]",
        ]
    )
    # Written back (a dead-letter copy), the sender's octets are what goes out.
    assert _marshal_header(content, 1) == frame


def test_foreign_octets_in_a_method_frame_routing_key() -> None:
    deliver = commands.Basic.Deliver("ctag", 1, False, "ex", "ok")
    frame = pamqp.frame.marshal(deliver, 1).replace(b"\x02ok", b"\x02\xff\xfe")
    _, _, decoded = lenient.unmarshal(frame)
    assert isinstance(decoded, commands.Basic.Deliver)
    assert octets_of(decoded.routing_key or "") == b"\xff\xfe"
    assert lenient.marshal_method(decoded, 1) == frame


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x05abc", b"\x00\x00\x00\x09\x01k", b"\x00\x00\x00\x03\x02ab"],
)
def test_truncated_input_is_a_value_error_not_a_crash(wire: bytes) -> None:
    decoder = decode_field_table if wire.startswith(b"\x00\x00") else decode_short_str
    with pytest.raises(ValueError, match=r"(?i)exceeds|unpack|missing"):
        decoder(wire)


def test_printable_shows_octets_and_control_characters_escaped() -> None:
    assert printable("abc") == "abc"
    assert printable(None) == "-"
    assert printable(BAD.decode("utf-8", "surrogateescape")) == "\\xff\\xfe\\xc3("
    assert printable(b"\xffok") == "\\xffok"
    assert printable("a\x1b[2Jb\nc") == "a\\x1b[2Jb\\nc"
    assert printable("\ud800") == "\\ud800"


def test_a_timestamp_no_datetime_can_hold_decodes_and_goes_back_as_its_64_bits() -> None:
    huge = 2**63 - 5
    frame = _content_header_from_pika(
        pika.spec.BasicProperties(timestamp=huge, headers={"when": "now"}),
    )
    _, _, content = lenient.unmarshal(frame)
    assert isinstance(content, header.ContentHeader)
    assert content.properties.timestamp == huge
    assert foreign_fields(content.properties) == ["timestamp"]
    assert _marshal_header(content, 1) == frame
    in_a_table = b"\x00\x00\x00\x0e\x04whenT" + struct.pack(">Q", huge)
    consumed, table = decode_field_table(in_a_table)
    assert consumed == len(in_a_table)
    assert encode_field_table(table) == in_a_table
