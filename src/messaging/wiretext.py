"""Values from the wire, as text that is safe to print or log.

Anything a sender wrote (a message id, a header, a routing key) may hold
octets that are not UTF-8, or control characters that move a terminal's
cursor or forge a log line. :func:`printable` shows such a value as plain
text: undecodable octets as ``\\xNN``, control characters escaped.
"""

from __future__ import annotations


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
