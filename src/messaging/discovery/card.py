"""What an agent announces about itself, and the JSON it travels as.

The schema (:data:`SCHEMA`), one JSON object per message body, UTF-8::

    {
      "schema": "chimera.discovery.v1",
      "event": "announce" | "withdraw",
      "instance": "9f0c2b4e6a1d4c3e8b7a",   unique per process and agent start
      "name": "weather_agent",               the agent_name
      "kind": "agent" | "subscriber",
      "version": "1.4.0",                    version=, else the distribution's, else ""
      "exchange": "chimera.events",
      "queue": "weather_agent",
      "routing_keys": ["weather.request"],   patterns bound
      "request_types": {"weather.request": "shop.v1.WeatherRequest"},
      "reply_types": {"weather.reply": "shop.v1.WeatherReply"},
      "host": "node-7", "pid": 4242,
      "since": "2026-12-04T16:00:00.000000+00:00",   start time, UTC
      "interval": 5.0,                       seconds until the next heartbeat
      "sent_at": "2026-12-04T16:00:05.000000+00:00"
    }

``request_types`` maps each key of the agent's ``get_routing_key_map()`` (of a
plain subscriber: each bound pattern its ``get_message_class`` accepts) to
the protobuf full name; ``reply_types`` maps ``get_publish_map()``; ``answers``
maps each typed handler's pattern to the type it replies with (added later: a
reader of an older card sees none). A reader
ignores fields it does not know; a later version adds fields, never renames.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf.message import Message as ProtoMessage

SCHEMA = "chimera.discovery.v1"
ANNOUNCE_KEY = "agent.announce"
WITHDRAW_KEY = "agent.withdraw"
LISTEN_PATTERN = "agent.*"
MISSED_HEARTBEATS = 3
"""A listener forgets an instance after this many of its intervals without a heartbeat."""
CONTENT_TYPE = "application/json"

Event = Literal["announce", "withdraw"]


@dataclass(frozen=True)
class AgentCard:
    """One running subscriber or agent, as it announces itself."""

    instance: str
    name: str
    kind: str
    version: str
    exchange: str
    queue: str
    routing_keys: tuple[str, ...]
    request_types: Mapping[str, str]
    reply_types: Mapping[str, str]
    host: str
    pid: int
    since: datetime
    interval: float
    event: Event = "announce"
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    answers: Mapping[str, str] = field(default_factory=dict)
    """Request pattern -> the type its typed handler answers with (each reply, for a stream)."""

    @property
    def expires_after(self) -> float:
        """Seconds after this heartbeat at which a listener forgets the instance."""
        return self.interval * MISSED_HEARTBEATS

    def stamped(self, event: Event = "announce") -> AgentCard:
        """This card as sent now."""
        return replace(self, event=event, sent_at=datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["routing_keys"] = list(self.routing_keys)
        data["request_types"] = dict(self.request_types)
        data["reply_types"] = dict(self.reply_types)
        data["answers"] = dict(self.answers)
        data["since"] = self.since.isoformat()
        data["sent_at"] = self.sent_at.isoformat()
        return {"schema": SCHEMA, **data}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> AgentCard:
        """Parse an announcement; ValueError for anything that is not one of :data:`SCHEMA`."""
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} announcement")
        try:
            event = data.get("event", "announce")
            if event not in ("announce", "withdraw"):
                raise ValueError(f"unknown event {event!r}")
            interval = float(data["interval"])
            if not interval > 0:
                raise ValueError(f"interval must be > 0, got {interval!r}")
            return cls(
                instance=_text(data["instance"]),
                name=_text(data["name"]),
                kind=_text(data.get("kind", "")),
                version=_text(data.get("version", "")),
                exchange=_text(data.get("exchange", "")),
                queue=_text(data.get("queue", "")),
                routing_keys=tuple(_text(k) for k in data.get("routing_keys", [])),
                request_types=_names(data.get("request_types", {})),
                reply_types=_names(data.get("reply_types", {})),
                host=_text(data.get("host", "")),
                pid=int(data.get("pid", 0)),
                since=datetime.fromisoformat(_text(data["since"])),
                interval=interval,
                event=event,
                sent_at=datetime.fromisoformat(_text(data["sent_at"])),
                answers=_names(data.get("answers", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed {SCHEMA} announcement: {exc!r}") from None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _names(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return {_text(k): _text(v) for k, v in value.items()}


def new_instance_id() -> str:
    """Unique per process and agent start (a random UUID; host and pid travel beside it)."""
    return uuid.uuid4().hex[:20]


def type_names(mapping: Mapping[str, type[ProtoMessage]]) -> dict[str, str]:
    return {key: cls.DESCRIPTOR.full_name for key, cls in mapping.items()}


def request_types_of(subscriber: object, routing_keys: tuple[str, ...]) -> dict[str, str]:
    """What ``subscriber`` takes: an agent's routing-key map, else what its
    ``get_message_class`` answers for each bound pattern (patterns it refuses are left out)."""
    routing_key_map = getattr(subscriber, "get_routing_key_map", None)
    if callable(routing_key_map):
        return type_names(routing_key_map())
    message_class: Callable[[str], type[ProtoMessage]] | None = getattr(
        subscriber, "get_message_class", None
    )
    found: dict[str, str] = {}
    if message_class is None:
        return found
    for key in routing_keys:
        try:
            found[key] = message_class(key).DESCRIPTOR.full_name
        except Exception:  # a pattern its map cannot name: not announced
            continue
    return found


def reply_types_of(subscriber: object) -> dict[str, str]:
    publish_map = getattr(subscriber, "get_publish_map", None)
    return type_names(publish_map()) if callable(publish_map) else {}


def answers_of(subscriber: object) -> dict[str, str]:
    """Request pattern -> what its typed handler answers with (an agent's typed handlers)."""
    handlers = getattr(getattr(subscriber, "agent", None), "handlers", None)
    reply_types = getattr(handlers, "reply_types", None)
    return type_names(reply_types()) if callable(reply_types) else {}


@functools.cache
def distribution_version(module: str) -> str:
    """The installed version of the distribution that ships ``module``, or ``""``.

    Scans the installed distributions once per top-level package (slow:
    call it off the event loop).
    """
    top = module.partition(".")[0]
    if top in ("", "__main__", "builtins"):
        return ""
    for distribution in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def card_for(subscriber: Any, interval: float, version: str | None = None) -> AgentCard:
    """The card of a running subscriber or agent (``version`` None: look it up)."""
    routing_keys = tuple(subscriber.routing_keys)
    if version is None:
        given = getattr(getattr(subscriber, "consumer", None), "options", None)
        version = getattr(given, "version", None)
    if version is None:
        version = distribution_version(type(subscriber).__module__)
    return AgentCard(
        instance=new_instance_id(),
        name=subscriber.agent_name,
        kind="agent" if callable(getattr(subscriber, "get_publish_map", None)) else "subscriber",
        version=version,
        exchange=subscriber.exchange_name,
        queue=subscriber.queue_name,
        routing_keys=routing_keys,
        request_types=request_types_of(subscriber, routing_keys),
        reply_types=reply_types_of(subscriber),
        answers=answers_of(subscriber),
        host=socket.gethostname(),
        pid=os.getpid(),
        since=datetime.now(UTC),
        interval=interval,
    )


__all__ = [
    "ANNOUNCE_KEY",
    "CONTENT_TYPE",
    "LISTEN_PATTERN",
    "MISSED_HEARTBEATS",
    "SCHEMA",
    "WITHDRAW_KEY",
    "AgentCard",
    "card_for",
    "distribution_version",
    "new_instance_id",
]
