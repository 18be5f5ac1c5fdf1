"""One line of the flight recorder: what happened to one message at one agent.

The stream holds AMQP messages whose body is JSON lines (UTF-8, one JSON
object per line, ``content_type`` ``application/x-ndjson``); a batch of
records travels as one message, so recording costs one publish per batch and
any language with a JSON parser reads it. Each object has these keys (absent
when unknown or empty, to keep lines short):

====================  ======================================================
key                   meaning
====================  ======================================================
``v``                 schema version, ``1``
``kind``              ``"publish"`` (a message prepared for sending) or
                      ``"handle"`` (a delivery that went through a handler)
``ts``                when it started: seconds since the Unix epoch (float)
``agent``             the agent (``app_id`` of what it sends)
``instance``          which process of that agent: ``host:pid``
``correlation_id``    the conversation
``message_id``        the message
``cause_id``          the message being handled when this one was sent
``exchange``          where it was sent (publish) or came through (handle)
``routing_key``       its routing key
``type``              the protobuf full name of the message
``reply_to``          where the answer goes (requests)
``outcome``           handle: ``"ok"``, ``"error"`` or ``"skipped"`` (a
                      middleware ended it without the handler)
``duration_ms``       handle: milliseconds the handler (and inner middlewares) took
``attempt``           handle: 1 for a first delivery, 2 for the first retry, ...
``error_type``        handle: the exception's class name (``module.Class``)
``error``             handle: its message, at most 500 characters, URLs with
                      credentials removed
``body``              base64 of the protobuf body, when bodies are recorded
                      for that agent (``RECORDER__BODIES``), cut at the size cap
``body_truncated``    true when ``body`` was cut
``headers``           the message's headers with bodies (never one named like
                      a password, token, secret, key, cookie or authorization)
====================  ======================================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _string
from typing import Any

VERSION = 1
CONTENT_TYPE = "application/x-ndjson"
ERROR_TEXT_LIMIT = 500

_SECRET_NAME = re.compile(r"pass|token|secret|authori[sz]ation|cookie|api[-_]?key|credential", re.I)
_URL_WITH_CREDENTIALS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@]*@[^\s]*", re.I)


@dataclass(slots=True)
class Record:
    """One recorded event; see the module's docstring for the meaning of each field."""

    kind: str
    ts: float
    agent: str
    instance: str = ""
    correlation_id: str | None = None
    message_id: str | None = None
    cause_id: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    type: str | None = None
    reply_to: str | None = None
    outcome: str | None = None
    duration_ms: float | None = None
    attempt: int | None = None
    error_type: str | None = None
    error: str | None = None
    body: str | None = None
    body_truncated: bool | None = None
    headers: dict[str, Any] | None = field(default=None)
    offset: int | None = None
    """The stream offset of the batch it was read from (set by readers, never written)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": VERSION}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None and value != "":
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: object) -> Record:
        """A record from one decoded line; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a record is a JSON object")
        kind, ts, agent = data.get("kind"), data.get("ts"), data.get("agent")
        if kind not in ("publish", "handle"):
            raise ValueError(f"unknown record kind {kind!r}")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise ValueError("a record needs a numeric ts")
        if not isinstance(agent, str):
            raise ValueError("a record needs an agent")
        values: dict[str, Any] = {}
        for name in _FIELDS:
            value = data.get(name)
            if value is None:
                continue
            expected = _TYPES[name]
            if isinstance(value, bool) and expected is not bool:
                raise ValueError(f"{name} has the wrong type")
            if not isinstance(value, expected):
                raise ValueError(f"{name} has the wrong type")
            values[name] = value
        values["ts"] = float(ts)
        return cls(**values)


_FIELDS = tuple(name for name in Record.__dataclass_fields__ if name != "offset")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str,
    "ts": (int, float),
    "agent": str,
    "instance": str,
    "correlation_id": str,
    "message_id": str,
    "cause_id": str,
    "exchange": str,
    "routing_key": str,
    "type": str,
    "reply_to": str,
    "outcome": str,
    "duration_ms": (int, float),
    "attempt": int,
    "error_type": str,
    "error": str,
    "body": str,
    "body_truncated": bool,
    "headers": dict,
}


def encode(records: Iterable[Record]) -> bytes:
    """Records as one JSON-lines body (ASCII: every other character escaped)."""
    return "".join(_line(r) for r in records).encode("ascii")


_HEADERS = json.JSONEncoder(separators=(",", ":"), default=str)


def _line(r: Record) -> str:
    """One record as a JSON line, as :meth:`Record.to_json` would dump it.

    Spelled out field by field: the writer encodes every record the bus
    handles, and this is a third cheaper than ``json.dumps(r.to_json())``.
    """
    s = _string
    out = '{"v":1,"kind":' + s(r.kind) + ',"ts":' + repr(float(r.ts)) + ',"agent":' + s(r.agent)
    if r.instance:
        out += ',"instance":' + s(r.instance)
    if r.correlation_id:
        out += ',"correlation_id":' + s(r.correlation_id)
    if r.message_id:
        out += ',"message_id":' + s(r.message_id)
    if r.cause_id:
        out += ',"cause_id":' + s(r.cause_id)
    if r.exchange:
        out += ',"exchange":' + s(r.exchange)
    if r.routing_key:
        out += ',"routing_key":' + s(r.routing_key)
    if r.type:
        out += ',"type":' + s(r.type)
    if r.reply_to:
        out += ',"reply_to":' + s(r.reply_to)
    if r.outcome:
        out += ',"outcome":' + s(r.outcome)
    if r.duration_ms is not None:
        out += ',"duration_ms":' + repr(float(r.duration_ms))
    if r.attempt is not None:
        out += ',"attempt":' + str(int(r.attempt))
    if r.error_type:
        out += ',"error_type":' + s(r.error_type)
    if r.error:
        out += ',"error":' + s(r.error)
    if r.body:
        out += ',"body":' + s(r.body)
    if r.body_truncated is not None:
        out += ',"body_truncated":' + ("true" if r.body_truncated else "false")
    if r.headers is not None:
        out += ',"headers":' + _HEADERS.encode(r.headers)
    return out + "}\n"


@dataclass(frozen=True, slots=True)
class Decoded:
    records: list[Record]
    skipped: int
    """Lines that were not records (not JSON, not an object, wrong types)."""


def decode(body: bytes, offset: int | None = None) -> Decoded:
    """The records of one stream message; what cannot be read is counted, never raised."""
    records: list[Record] = []
    skipped = 0
    for line in _lines(body):
        try:
            record = Record.from_json(json.loads(line))
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            skipped += 1
            continue
        record.offset = offset
        records.append(record)
    return Decoded(records, skipped)


def _lines(body: bytes) -> Iterator[bytes]:
    for line in body.split(b"\n"):
        if line.strip():
            yield line


def safe_error_text(text: str) -> str:
    """An error's message fit for the record: credentials in URLs removed, length capped."""
    cleaned = _URL_WITH_CREDENTIALS.sub("<url>", text)
    if len(cleaned) > ERROR_TEXT_LIMIT:
        cleaned = cleaned[: ERROR_TEXT_LIMIT - 1] + "…"
    return cleaned


def safe_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers without any whose name looks like it holds a secret; values as JSON-safe text."""
    kept: dict[str, Any] = {}
    for name, value in headers.items():
        if _SECRET_NAME.search(name):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            value = _URL_WITH_CREDENTIALS.sub("<url>", value)
        elif not isinstance(value, int | float | bool) and value is not None:
            value = _URL_WITH_CREDENTIALS.sub("<url>", str(value))
        kept[name] = value
    return kept
