"""OpenTelemetry behind :mod:`messaging.ops.tracing`; imported only once tracing is enabled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

T = TypeVar("T")

_tracer = trace.get_tracer("messaging")

SYSTEM = "rabbitmq"
# RabbitMQ's own name for the nameless default exchange (it accepts it in
# declares and shows it so in the management UI); an empty span name would not do.
DEFAULT_EXCHANGE = "amq.default"

Handle = tuple[trace.Span, object]


def exchange_name(exchange: str | None) -> str:
    return exchange or DEFAULT_EXCHANGE


def _attributes(
    exchange: str | None,
    routing_key: str | None,
    operation: str,
    operation_type: str | None,
    message_id: str | None,
    correlation_id: str | None,
) -> dict[str, str]:
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": exchange_name(exchange),
        "messaging.operation.name": operation,
    }
    if operation_type:
        attributes["messaging.operation.type"] = operation_type
    if routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    if message_id:
        attributes["messaging.message.id"] = message_id
    if correlation_id:
        attributes["messaging.message.conversation_id"] = correlation_id
    return attributes


def start_publish_span(
    headers: MutableMapping[str, Any],
    exchange: str,
    routing_key: str,
    message_id: str,
    correlation_id: str | None,
) -> trace.Span:
    span = _tracer.start_span(
        f"publish {exchange_name(exchange)}",
        kind=SpanKind.PRODUCER,
        attributes=_attributes(
            exchange, routing_key, "publish", "send", message_id, correlation_id
        ),
    )
    propagate.inject(headers, context=trace.set_span_in_context(span))
    return span


def end_publish_span(span: trace.Span, error: BaseException | None) -> None:
    if error is not None and not isinstance(error, asyncio.CancelledError):
        # Cancelled is no failure: a request answered before its confirm stops waiting.
        _record(span, error)
    span.end()


def start_request_span(exchange: str, routing_key: str, correlation_id: str | None) -> Handle:
    span = _tracer.start_span(
        f"request {exchange_name(exchange)}",
        kind=SpanKind.CLIENT,
        attributes=_attributes(exchange, routing_key, "request", None, None, correlation_id),
    )
    return span, context.attach(trace.set_span_in_context(span))


def start_process_span(properties: dict[str, Any], agent: str, queue: str) -> Handle:
    parent = propagate.extract(properties.get("headers") or {})
    attributes = _attributes(
        properties.get("exchange"),
        properties.get("routing_key"),
        "process",
        "process",
        properties.get("message_id"),
        properties.get("correlation_id"),
    )
    attributes["messaging.consumer.group.name"] = agent
    if queue:
        attributes["messaging.destination.subscription.name"] = queue
    # A request (its sender waits on reply_to) is answered by a server span,
    # so a trace tool draws the round trip as client -> server.
    kind = SpanKind.SERVER if properties.get("reply_to") else SpanKind.CONSUMER
    span = _tracer.start_span(
        f"process {queue or exchange_name(properties.get('exchange'))}",
        context=parent,
        kind=kind,
        attributes=attributes,
    )
    return span, context.attach(trace.set_span_in_context(span))


def end_current_span(handle: Handle, error: BaseException | None) -> None:
    span, token = handle
    if error is not None:
        _record(span, error)
    span.end()
    context.detach(token)  # type: ignore[arg-type]


def _record(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


async def _run_in(ctx: context.Context, coro: Coroutine[Any, Any, T]) -> T:
    token = context.attach(ctx)
    try:
        return await coro
    finally:
        context.detach(token)


def in_current_context(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    return _run_in(context.get_current(), coro)
