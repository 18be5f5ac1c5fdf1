"""Deadlines: a request carries when its caller stops waiting, and nobody works past it.

The caller writes the absolute deadline (:data:`~messaging.headers.DEADLINE`)
on every request. :class:`Deadline`, a step of every subscriber's pipeline,
acks a request that arrives past it without handling it (counted in
``chimera_requests_expired``, logged with its correlation id), and otherwise
makes it the deadline of the code that handles it: a request made there
inherits the time left (:func:`inherited_timeout`).

A header that is not a number is data from a foreign client, not a deadline:
the message is handled as if it had none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from contextvars import ContextVar

from messaging.aio.envelope import Envelope
from messaging.aio.middleware import Middleware
from messaging.headers import DEADLINE
from messaging.ops.metrics import ConsumerMetrics
from messaging.wiretext import printable

log = logging.getLogger("messaging.subscriber")

_deadline: ContextVar[float | None] = ContextVar("chimera_deadline", default=None)


def current_deadline() -> float | None:
    """The deadline of the request being handled here (seconds since the epoch), if any."""
    return _deadline.get()


def inherited_timeout(timeout: float) -> float:
    """``timeout``, cut to the time left of the request being handled here, if shorter."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    return max(0.001, min(timeout, deadline - time.time()))


def deadline_header(timeout: float) -> int:
    """The :data:`~messaging.headers.DEADLINE` value of a request sent now."""
    return int((time.time() + timeout) * 1000)


def deadline_of(value: object) -> float | None:
    """A :data:`~messaging.headers.DEADLINE` header as seconds since the epoch; None if
    it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | bytes):
        return None
    try:
        return float(value) / 1000.0
    except ValueError:
        return None


class Deadline(Middleware):
    """Skips (and acks) a request past its deadline; binds the deadline while it is handled."""

    def __init__(self, agent_name: str, metrics: ConsumerMetrics) -> None:
        self.agent_name = agent_name
        self.metrics = metrics

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        headers = envelope.headers
        deadline = deadline_of(headers.get(DEADLINE)) if headers else None
        if deadline is None:
            yield
            return
        late = time.time() - deadline
        if late >= 0:
            self.metrics.expired.inc()
            log.info(
                "%s: request on %s arrived %.3fs past its caller's deadline; acked, not "
                "handled [correlation_id=%s]",
                self.agent_name,
                printable(envelope.routing_key),
                late,
                printable(envelope.correlation_id),
            )
            return
        envelope.properties["deadline"] = deadline
        token = _deadline.set(deadline)
        try:
            yield
        finally:
            _deadline.reset(token)
