"""W3C trace context across the broker, through OpenTelemetry (optional).

Off until :func:`enable_tracing` is called (it needs the ``otel`` extra). When
on, every publish injects ``traceparent`` into the message headers and every
handler runs in a consumer span whose parent is the publisher's span, so a
workflow across agents shows as one trace. When off, the hooks below cost one
attribute check per message.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

_enabled = False


def enable_tracing() -> None:
    """Propagate trace context through message headers (needs opentelemetry-api)."""
    global _enabled
    import opentelemetry.propagate  # noqa: F401  (fail now if the extra is missing)

    _enabled = True


def disable_tracing() -> None:
    global _enabled
    _enabled = False


def inject(headers: MutableMapping[str, Any], routing_key: str) -> None:
    """Write the current trace context into ``headers``; starts a producer span."""
    if not _enabled:
        return
    from messaging.ops._otel import inject_headers

    inject_headers(headers, routing_key)


def start_consume(properties: dict[str, Any], agent: str) -> Any:
    """Open the consumer span for a delivery; pass the result to :func:`end_consume`."""
    if not _enabled:
        return None
    from messaging.ops._otel import start_span

    return start_span(properties, agent)


def end_consume(span: Any, error: BaseException | None) -> None:
    if span is None:
        return
    from messaging.ops._otel import end_span

    end_span(span, error)
