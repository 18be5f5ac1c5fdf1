"""OpenTelemetry behind :mod:`messaging.ops.tracing`; imported only once tracing is enabled."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

_tracer = trace.get_tracer("messaging")

Handle = tuple[trace.Span, object]


def inject_headers(headers: MutableMapping[str, Any], routing_key: str) -> None:
    """A short producer span, child of whatever is current, carried in ``traceparent``."""
    span = _tracer.start_span(
        f"{routing_key} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "rabbitmq", "messaging.destination.name": routing_key},
    )
    propagate.inject(headers, context=trace.set_span_in_context(span))
    span.end()


def start_span(properties: dict[str, Any], agent: str) -> Handle:
    parent = propagate.extract(properties.get("headers") or {})
    attributes: dict[str, str] = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": str(properties.get("routing_key") or ""),
        "messaging.consumer.group.name": agent,
    }
    if properties.get("message_id"):
        attributes["messaging.message.id"] = str(properties["message_id"])
    if properties.get("correlation_id"):
        attributes["messaging.message.conversation_id"] = str(properties["correlation_id"])
    span = _tracer.start_span(
        f"{properties.get('routing_key')} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    )
    token = context.attach(trace.set_span_in_context(span))
    return span, token


def end_span(handle: Handle, error: BaseException | None) -> None:
    span, token = handle
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()
    context.detach(token)  # type: ignore[arg-type]
