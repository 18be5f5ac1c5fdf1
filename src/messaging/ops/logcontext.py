"""The message in hand, for every log line written while it is handled.

The subscriber binds the correlation id and message id to context variables
around each handler call, so the handler's own log lines (and the library's)
carry them. :class:`MessageContextFilter` copies them onto log records;
:func:`messaging.ops.logs.configure_logging` installs it.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any

from messaging.wiretext import printable

correlation_id: ContextVar[str | None] = ContextVar("chimera_correlation_id", default=None)
message_id: ContextVar[str | None] = ContextVar("chimera_message_id", default=None)

Bound = tuple[Token[str | None], Token[str | None]]


def bind(properties: dict[str, Any]) -> Bound:
    """Bind the message's ids, as text safe for a log line (a sender chose them)."""
    cid, mid = properties.get("correlation_id"), properties.get("message_id")
    return (
        correlation_id.set(None if cid is None else printable(cid)),
        message_id.set(None if mid is None else printable(mid)),
    )


def unbind(tokens: Bound) -> None:
    correlation_id.reset(tokens[0])
    message_id.reset(tokens[1])


class MessageContextFilter(logging.Filter):
    """Adds ``correlation_id`` and ``message_id`` (or ``-``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = correlation_id.get() or "-"
        if not hasattr(record, "message_id"):
            record.message_id = message_id.get() or "-"
        return True
