"""OpenTelemetry spans and W3C trace context across the broker (optional).

Off until :func:`enable_tracing` is called (it needs the ``otel`` extra). When
on, spans follow the OpenTelemetry messaging semantic conventions:

- every publish runs in a PRODUCER span ``publish <exchange>`` from
  ``prepare`` until the broker confirmed it (ERROR, with the exception, when
  the publish fails), and carries its ``traceparent`` in the message headers;
- every handler runs in a CONSUMER span ``process <queue>`` whose parent is
  that producer span, or a SERVER span when the delivery is a request
  (it carries ``reply_to``);
- ``request()`` runs in a CLIENT span ``request <exchange>`` covering the
  round trip, so a workflow across agents shows as one trace.

When off, every hook below is one module-global check and returns ``None``:
the hot path builds no span, no dict and imports nothing.
"""

from __future__ import annotations

from collections.abc import Coroutine, MutableMapping
from typing import Any, TypeVar

T = TypeVar("T")

_enabled = False


def enable_tracing() -> None:
    """Trace publishes, handlers and requests (needs opentelemetry-api)."""
    global _enabled
    import opentelemetry.propagate  # noqa: F401  (fail now if the extra is missing)

    _enabled = True


def disable_tracing() -> None:
    global _enabled
    _enabled = False


def start_publish(
    headers: MutableMapping[str, Any],
    exchange: str,
    routing_key: str,
    message_id: str,
    correlation_id: str | None,
) -> Any:
    """Open the producer span, child of whatever is current, and write it into ``headers``.

    Pass the result to :func:`end_publish` once the broker confirmed (or refused).
    """
    if not _enabled:
        return None
    from messaging.ops._otel import start_publish_span

    return start_publish_span(headers, exchange, routing_key, message_id, correlation_id)


def end_publish(span: Any, error: BaseException | None) -> None:
    if span is None:
        return
    from messaging.ops._otel import end_publish_span

    end_publish_span(span, error)


def start_request(exchange: str, routing_key: str, correlation_id: str | None) -> Any:
    """Open the client span of a request and make it current; see :func:`end_request`."""
    if not _enabled:
        return None
    from messaging.ops._otel import start_request_span

    return start_request_span(exchange, routing_key, correlation_id)


def end_request(handle: Any, error: BaseException | None) -> None:
    if handle is None:
        return
    from messaging.ops._otel import end_current_span

    end_current_span(handle, error)


def start_consume(properties: dict[str, Any], agent: str, queue: str = "") -> Any:
    """Open the span a handler runs in; pass the result to :func:`end_consume`."""
    if not _enabled:
        return None
    from messaging.ops._otel import start_process_span

    return start_process_span(properties, agent, queue)


def end_consume(handle: Any, error: BaseException | None) -> None:
    if handle is None:
        return
    from messaging.ops._otel import end_current_span

    end_current_span(handle, error)


def carry(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """``coro``, made to run in this thread's trace context wherever it is awaited.

    The sync API runs its coroutines on the IO thread, whose context is not
    the caller's: without this, a request made from a sync handler would start
    a new trace.
    """
    if not _enabled:
        return coro
    from messaging.ops._otel import in_current_context

    return in_current_context(coro)
