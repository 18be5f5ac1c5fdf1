"""Values from the wire, as text that is safe to print or log.

Anything a sender wrote (a message id, a header, a routing key) may hold
octets that are not UTF-8, or control characters that move a terminal's
cursor or forge a log line. :func:`printable` shows such a value as plain
text: undecodable octets as ``\\xNN``, control characters escaped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ERRORS = "surrogateescape"
"""How a short string that is not UTF-8 is decoded: each foreign octet becomes a lone
surrogate, so the value is a ``str`` that turns back into exactly those octets."""


def printable(value: object) -> str:
    """``value`` as one line of plain text; ``None`` as ``-``.

    Octets that arrived as a lone surrogate (see
    :mod:`messaging.transport.amqp.octets`) or as ``bytes`` are shown as
    ``\\xNN``; non-printable characters as their Python escape.
    """
    if isinstance(value, str):
        if value.isascii() and value.isprintable():
            return value  # the common case, kept cheap: this runs per message
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that never was an octet
            raw = value.encode("utf-8", "backslashreplace")
        text = raw.decode("utf-8", "backslashreplace")
    elif value is None:
        return "-"
    elif isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "backslashreplace")
    else:
        text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class RawTimestamp(int):
    """An AMQP timestamp no ``datetime`` can hold (year 0 or past 9999), as its 64-bit value.

    pamqp raises on those; here they decode to this, count as foreign, and
    are written back as the same 64 bits.
    """


def is_foreign(value: object) -> bool:
    """True when ``value`` came off the wire as something this bus does not accept.

    That is a ``str`` holding escaped octets (a short string that is not
    UTF-8), ``bytes`` (a long string that is not UTF-8, as pamqp decodes it),
    or a :class:`RawTimestamp`.
    """
    if isinstance(value, bytes | bytearray | RawTimestamp):
        return True
    if not isinstance(value, str) or value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def octets_of(value: str | bytes) -> bytes:
    """The octets a decoded short or long string arrived as."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value.encode("utf-8", ERRORS)


def foreign_fields(properties: Any) -> list[str]:
    """Names of the properties and header keys of a message that are not UTF-8.

    ``properties`` are a message's (any transport's); header keys are named
    ``headers[<key>]`` (printable), nested tables included.
    """
    found = []
    for name in _SHORT_STRING_PROPERTIES:  # runs per delivery: ASCII, the usual case, first
        value = getattr(properties, name, None)
        if value is None or (type(value) is str and value.isascii()):
            continue
        if isinstance(value, str) and is_foreign(value):
            found.append(name)
    if isinstance(getattr(properties, "timestamp", None), RawTimestamp):
        found.append("timestamp")
    headers = getattr(properties, "headers", None)
    if isinstance(headers, Mapping):
        found.extend(_foreign_keys(headers, "headers"))
    return found


def _foreign_keys(table: Mapping[str, Any], where: str) -> list[str]:
    found: list[str] = []
    for key, value in table.items():
        if not (type(key) is str and key.isascii()) and is_foreign(key):
            found.append(f"{where}[{printable(key)}]")
        if isinstance(value, Mapping):
            found.extend(_foreign_keys(value, f"{where}[{printable(key)}]"))
    return found


_SHORT_STRING_PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)
