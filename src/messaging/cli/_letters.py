"""What a message says about itself: its decoded body and why it is a dead letter. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from messaging.cli._output import text
from messaging.dead_letters import recorded_route, replay_headers
from messaging.serialization import deserialize, message_class_for, to_dict
from messaging.transport import Delivery, MessageProperties, Properties

CHIMERA_PREFIX = "x-chimera-"


def plain(value: Any) -> Any:
    """Header values as JSON-ready data (AMQP tables hold bytes and datetimes)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def hex_snippet(body: bytes, limit: int = 48) -> str:
    more = f" … ({len(body)} bytes)" if len(body) > limit else f" ({len(body)} bytes)"
    return body[:limit].hex(" ") + more


@dataclass(frozen=True)
class Decoded:
    data: dict[str, Any] | None
    problem: str | None


def decode(type_name: str | None, body: bytes) -> Decoded:
    """The body as data, by its ``type`` property; never raises."""
    if not type_name:
        return Decoded(None, "no `type` property")
    try:
        return Decoded(to_dict(deserialize(body, message_class_for(type_name))), None)
    except Exception as exc:  # any body at all must print, whatever it is
        return Decoded(None, str(exc))


def body_text(type_name: str | None, body: bytes) -> Text:
    """The body on one line: compact JSON when it decodes, else why not and a hex snippet."""
    decoded = decode(type_name, body)
    if decoded.data is not None:
        return text(json.dumps(decoded.data, default=str, ensure_ascii=False))
    return text((f"undecodable ({decoded.problem}): {hex_snippet(body)}", "yellow"))


def body_record(type_name: str | None, body: bytes) -> dict[str, Any]:
    """The body for a JSON line: ``body`` when it decodes, else ``body_error`` and ``body_hex``."""
    decoded = decode(type_name, body)
    if decoded.data is not None:
        return {"body": decoded.data}
    return {"body": None, "body_error": decoded.problem, "body_hex": body.hex()}


def headers_of(delivery: Delivery) -> dict[str, Any]:
    headers = delivery.properties.headers
    return dict(headers) if headers else {}


def deaths(headers: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``x-death`` entries, newest first as RabbitMQ keeps them, as plain data."""
    entries = headers.get("x-death")
    if not isinstance(entries, list | tuple):
        return []
    return [plain(e) for e in entries if isinstance(e, dict)]


def chimera_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {k: plain(v) for k, v in headers.items() if k.startswith(CHIMERA_PREFIX)}


def why(headers: dict[str, Any]) -> str:
    """One line: the latest reason, from which queue, and the error when the bus recorded it."""
    parts: list[str] = []
    entries = deaths(headers)
    if entries:
        last = entries[0]
        parts.append(f"{last.get('reason', '?')} from {last.get('queue', '?')}")
        if int(last.get("count", 1) or 1) > 1:
            parts.append(f"x{last['count']}")
    error_type = headers.get("x-chimera-error-type")
    if error_type is not None:
        parts.append(str(plain(error_type)))
    error_message = headers.get("x-chimera-error-message")
    if error_message is not None:
        parts.append(str(plain(error_message)))
    return " · ".join(parts) if parts else "-"


def original_target(headers: dict[str, Any], work_queue: str) -> tuple[str, str] | None:
    """Where the message was delivered from when it died: exchange and routing key.

    The route recorded when it was dead-lettered (:func:`messaging.dead_letters.recorded_route`):
    never one a sender wrote in its own headers. None when nothing recorded one.
    """
    route = recorded_route(headers, work_queue)
    return None if route is None else (route.exchange, route.routing_key)


def replay_properties(props: MessageProperties, work_queue: str) -> Properties:
    """The original properties, minus what the broker added when it dead-lettered
    (and a sender's own ``x-chimera-*`` headers: :func:`messaging.dead_letters.replay_headers`)."""
    headers = replay_headers(dict(props.headers or {}), work_queue)
    return Properties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers or None,
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.message_type,
        app_id=props.app_id,
    )


def properties_of(delivery: Delivery) -> dict[str, Any]:
    """Where it was delivered from and the properties people ask about, as plain data."""
    props = delivery.properties
    return {
        "routing_key": plain(delivery.routing_key),
        "exchange": plain(delivery.exchange),
        "type": plain(props.message_type),
        "message_id": plain(props.message_id),
        "correlation_id": plain(props.correlation_id),
        "app_id": plain(props.app_id),
        "timestamp": plain(props.timestamp),
    }


def record(delivery: Delivery) -> dict[str, Any]:
    """A message in full as one JSON-ready object: properties, headers, x-death, body."""
    headers = headers_of(delivery)
    return {
        **properties_of(delivery),
        "headers": plain(headers),
        "x_death": deaths(headers),
        "why": why(headers),
        **body_record(delivery.properties.message_type, delivery.body),
    }


def describe_lines(delivery: Delivery) -> list[Text]:
    """A message in full for people: properties, decoded body, the why-headers; all made safe."""
    headers = headers_of(delivery)
    meta = properties_of(delivery)
    lines = [
        text("  ".join(f"{k}={v}" for k, v in meta.items() if v not in (None, ""))),
        body_text(delivery.properties.message_type, delivery.body),
    ]
    for entry in deaths(headers):
        detail = ", ".join(
            f"{key}={entry[key]}"
            for key in ("reason", "queue", "exchange", "routing-keys", "count", "time")
            if key in entry
        )
        lines.append(text((f"x-death: {detail}", "magenta")))
    for key, value in chimera_headers(headers).items():
        lines.append(text((f"{key}: {value}", "cyan")))
    return lines


def describe(delivery: Delivery) -> RenderableType:
    return Group(*describe_lines(delivery))
