"""The pipeline's outermost step: metrics, log context and the trace span of a delivery.

One step for the three, because they open and close at the same two points
around everything else (decoding included, so an undecodable message is
counted, logged with its ids and traced like a failed handler): one
generator per delivery instead of three.
"""

from __future__ import annotations

import time
from collections.abc import Generator

from messaging.aio.envelope import Envelope
from messaging.aio.middleware import Middleware
from messaging.ops import logcontext, tracing
from messaging.ops.metrics import ConsumerMetrics


class Telemetry(Middleware):
    """Counts, times and traces each delivery, with its ids bound for every log line."""

    def __init__(self, agent_name: str, queue_name: str, metrics: ConsumerMetrics) -> None:
        self.agent_name = agent_name
        self.queue_name = queue_name
        self.metrics = metrics

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        metrics = self.metrics
        properties = envelope.properties
        metrics.consumed.inc()
        tokens = logcontext.bind(properties)
        span = tracing.start_consume(properties, self.agent_name, self.queue_name)
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            metrics.handler_seconds.observe(time.perf_counter() - started)
            metrics.handler_error(exc)
            tracing.end_consume(span, exc)
            raise
        finally:
            logcontext.unbind(tokens)
        metrics.handler_seconds.observe(time.perf_counter() - started)
        metrics.acked.inc()
        tracing.end_consume(span, None)
