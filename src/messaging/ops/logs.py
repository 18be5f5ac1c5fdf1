"""Logging setup for agent processes: the message's ids on every line, text or JSON.

:func:`configure_logging` installs one handler on the root logger with
:class:`~messaging.ops.logcontext.MessageContextFilter`, so every line written
while a message is handled (the library's and the handler's own) carries its
correlation id and message id. ``fmt="text"`` is for people::

    2024-05-01 12:00:00,123 INFO data_agent: fetched prices [correlation_id=c-1 message_id=m-1]

``fmt="json"`` is for log shippers, one object per line::

    {"ts": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "data_agent",
     "message": "fetched prices", "correlation_id": "c-1", "message_id": "m-1"}

Passwords never reach the output: the configured one is a
:class:`pydantic.SecretStr` (its repr is ``**********``), and as a last guard
both formats mask the password of any ``scheme://user:password@`` URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from messaging.config import Settings, load_config
from messaging.ops.logcontext import MessageContextFilter

LogFormat = Literal["text", "json"]

TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s: %(message)s "
    "[correlation_id=%(correlation_id)s message_id=%(message_id)s]"
)

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", re.IGNORECASE)

# Attributes every LogRecord has; anything else was passed in ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "correlation_id",
    "message_id",
    "taskName",
}


def redact(text: str) -> str:
    """``amqp://user:secret@host`` -> ``amqp://user:******@host``."""
    return _URL_PASSWORD.sub(r"\1******@", text)


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the message's ids in brackets at the end."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, ids, exc_info, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": _id(getattr(record, "correlation_id", None)),
            "message_id": _id(getattr(record, "message_id", None)),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        return redact(json.dumps(entry, default=repr, ensure_ascii=False))


def _iso_utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _id(value: object) -> str | None:
    return None if value in (None, "-") else str(value)


class _BusHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so reconfiguring replaces it."""


def configure_logging(
    level: int | str = "INFO", fmt: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level``, in ``fmt``, with the message's ids.

    Replaces the handler a previous call installed; other handlers on the
    root logger are left alone. Returns the handler.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; use 'text' or 'json'")
    handler = _BusHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(MessageContextFilter())
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BusHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def configure_from_config(settings: Settings | None = None) -> logging.Handler:
    """:func:`configure_logging` from ``MONITORING__LOG_FORMAT`` and ``MONITORING__LOG_LEVEL``."""
    monitoring = (settings if settings is not None else load_config()).monitoring
    return configure_logging(monitoring.log_level, monitoring.log_format)
