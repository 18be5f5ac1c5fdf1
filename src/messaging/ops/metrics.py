"""Prometheus metrics of the bus, in the default registry.

Every publisher and consumer binds its labelled children once, at creation,
so the hot path pays one ``inc()`` per event and no label lookups. Routing
keys are user data: at most :data:`MAX_ROUTING_KEYS` distinct values per
publisher are kept as labels, the rest count as ``"other"``; replies to a
caller's direct reply-to address are all labelled :data:`REPLY_ROUTING_KEY`
(each caller has an address of its own: one series per caller otherwise).

Connection state (up, uptime, reconnects, blocked) is read from the live
pools when Prometheus scrapes, by :class:`PoolCollector`, so it costs nothing
between scrapes. Dead-letter queue depths are read from the broker at scrape
time too, by :class:`DLQCollector`, at most once per :data:`DLQ_CACHE_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, get_args

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from messaging.config import RabbitMQConfig
from messaging.transport.base import ConnectionHealth

log = logging.getLogger("messaging.metrics")

MAX_ROUTING_KEYS = 100
DLQ_CACHE_SECONDS = 5.0
REPLY_ROUTING_KEY = "(reply)"

Outcome = Literal["confirmed", "replied", "cancelled", "nacked", "returned", "failed", "timeout"]
"""How a publish ended: the ``outcome`` label of ``chimera_messages_published_total``.

docs/MONITORING.md has a table of these (a test keeps the two equal).
"""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
FAILED_OUTCOMES: tuple[Outcome, ...] = ("nacked", "returned", "failed", "timeout")
"""The outcomes that are failures; the shipped alert and dashboard select these."""

PUBLISHED = Counter(
    "chimera_messages_published",
    "Publishes by outcome: confirmed; replied (a reply to direct reply-to, sent without "
    "a confirm); cancelled (a request answered before its confirm); and the failures "
    "nacked, returned (unroutable), failed, timeout.",
    ["agent", "exchange", "routing_key", "outcome"],
)
PUBLISHES_IN_FLIGHT = Gauge(
    "chimera_publishes_in_flight", "Publishes sent and not yet confirmed.", ["agent"]
)
CONSUMED = Counter(
    "chimera_messages_consumed", "Messages delivered to a subscriber.", ["agent", "queue"]
)
ACKED = Counter("chimera_messages_acked", "Messages handled and acknowledged.", ["agent", "queue"])
RETRIED = Counter(
    "chimera_messages_retried",
    "Failed messages sent to a delay queue for another attempt.",
    ["agent", "queue"],
)
DEAD_LETTERED = Counter(
    "chimera_messages_dead_lettered",
    "Failed messages moved to the dead-letter queue.",
    ["agent", "queue"],
)
HANDLER_ERRORS = Counter(
    "chimera_handler_errors",
    "Handler exceptions and undecodable messages, by exception type.",
    ["agent", "queue", "error_type"],
)
EXPIRED = Counter(
    "chimera_requests_expired",
    "Requests not handled because they arrived past their caller's deadline (acked).",
    ["agent", "queue"],
)
CANCELLED = Counter(
    "chimera_requests_cancelled",
    "Requests (and streams) whose caller gave up while they were being handled.",
    ["agent", "queue"],
)
HANDLER_SECONDS = Histogram(
    "chimera_handler_duration_seconds",
    "Time spent in message handlers.",
    ["agent", "queue"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class PublisherMetrics:
    """One publisher's labelled metrics."""

    def __init__(self, agent: str, exchange: str) -> None:
        self.agent = agent
        self.exchange = exchange
        self.in_flight = PUBLISHES_IN_FLIGHT.labels(agent)
        self._children: dict[tuple[str, str], Counter] = {}
        self._keys: set[str] = set()

    def published(self, routing_key: str, outcome: Outcome) -> None:
        child = self._children.get((routing_key, outcome))
        if child is None:
            child = self._bind(routing_key, outcome)
        child.inc()

    def replied(self, outcome: Outcome) -> None:
        """A reply to a caller's direct reply-to address, whatever the address."""
        self.published(REPLY_ROUTING_KEY, outcome)

    def _bind(self, routing_key: str, outcome: Outcome) -> Counter:
        label = routing_key
        if routing_key not in self._keys and routing_key != REPLY_ROUTING_KEY:
            if len(self._keys) >= MAX_ROUTING_KEYS:
                label = "other"
            else:
                self._keys.add(routing_key)
        child: Counter = PUBLISHED.labels(self.agent, self.exchange, label, outcome)
        self._children[(routing_key, outcome)] = child
        if len(self._children) > 4 * MAX_ROUTING_KEYS:
            self._children.clear()  # many distinct keys: forget the cache, keep the labels
        return child


class ConsumerMetrics:
    """One subscriber's labelled metrics."""

    def __init__(self, agent: str, queue: str) -> None:
        self.agent = agent
        self.queue = queue
        self.consumed = CONSUMED.labels(agent, queue)
        self.acked = ACKED.labels(agent, queue)
        self.retried = RETRIED.labels(agent, queue)
        self.dead_lettered = DEAD_LETTERED.labels(agent, queue)
        self.handler_seconds = HANDLER_SECONDS.labels(agent, queue)
        self.expired = EXPIRED.labels(agent, queue)
        self.cancelled = CANCELLED.labels(agent, queue)

    def handler_error(self, exc: BaseException) -> None:
        HANDLER_ERRORS.labels(self.agent, self.queue, type(exc).__name__).inc()


class _PoolHealth(Protocol):
    @property
    def publishing(self) -> ConnectionHealth: ...

    @property
    def consuming(self) -> ConnectionHealth: ...


class WatchedPool(Protocol):
    """What the collector reads of a pool (an :class:`~messaging.aio.AsyncConnectionPool`)."""

    @property
    def closed(self) -> bool: ...

    @property
    def config(self) -> RabbitMQConfig: ...

    def health(self) -> _PoolHealth: ...


class PoolCollector(Collector):
    """Connection metrics read from every live pool at scrape time."""

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[WatchedPool] = weakref.WeakSet()

    def track(self, pool: WatchedPool) -> None:
        self._pools.add(pool)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "chimera_connection_up", "1 while the connection is open.", labels=["connection"]
        )
        uptime = GaugeMetricFamily(
            "chimera_connection_uptime_seconds",
            "Seconds since the connection opened.",
            labels=["connection"],
        )
        blocked = GaugeMetricFamily(
            "chimera_connection_blocked",
            "1 while the broker blocks publishing (memory or disk alarm).",
            labels=["connection"],
        )
        reconnects = CounterMetricFamily(
            "chimera_reconnects", "Re-connections after a drop.", labels=["connection"]
        )
        seen: dict[str, int] = {}
        for pool in list(self._pools):
            if pool.closed:
                continue
            # Two live pools may share a connection name: number the repeats
            # so their series do not collide.
            base = pool.config.connection_name
            seen[base] = seen.get(base, 0) + 1
            label = base if seen[base] == 1 else f"{base}#{seen[base]}"
            health = pool.health()
            for conn in (health.publishing, health.consuming):
                name = f"{label}:{conn.purpose}"
                up.add_metric([name], 1.0 if conn.connected else 0.0)
                uptime.add_metric([name], conn.uptime)
                blocked.add_metric([name], 1.0 if conn.blocked else 0.0)
                reconnects.add_metric([name], conn.reconnects)
        yield from (up, uptime, blocked, reconnects)


POOLS = PoolCollector()
REGISTRY.register(POOLS)


DepthProbe = Callable[[], int]
"""Asks the broker how many messages one dead-letter queue holds; blocks, may raise."""


class DLQCollector(Collector):
    """``chimera_dlq_messages{queue}``: dead letters waiting, read from the broker.

    Whoever can reach the broker (:class:`messaging.ops.health.HealthServer`) tracks
    a probe per subscriber queue. A scrape asks each probe at most once per
    ``cache_seconds`` (a failure too), and a failing probe is logged and left
    out of that scrape, never raised into it.
    """

    def __init__(self, cache_seconds: float = DLQ_CACHE_SECONDS) -> None:
        self.cache_seconds = cache_seconds
        self._probes: dict[str, DepthProbe] = {}
        self._cache: dict[str, tuple[float, int | None]] = {}
        self._lock = threading.Lock()

    def track(self, queue: str, probe: DepthProbe) -> None:
        """Report the depth of ``queue``'s DLQ, as ``probe`` reads it."""
        with self._lock:
            self._probes[queue] = probe
            self._cache.pop(queue, None)

    def untrack(self, queue: str, probe: DepthProbe | None = None) -> None:
        """Stop reporting ``queue`` (only if it is still ``probe``'s, when given)."""
        with self._lock:
            if probe is None or self._probes.get(queue) is probe:
                self._probes.pop(queue, None)
                self._cache.pop(queue, None)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        with self._lock:  # one scrape probes at a time; the others get its cache
            for queue, probe in sorted(self._probes.items()):
                depth = self._depth(queue, probe)
                if depth is not None:
                    family.add_metric([queue], float(depth))
        yield family

    def _depth(self, queue: str, probe: DepthProbe) -> int | None:
        now = time.monotonic()
        cached = self._cache.get(queue)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        depth: int | None
        try:
            depth = probe()
        except Exception as exc:
            log.warning("could not read the depth of the DLQ of %s: %r", queue, exc)
            depth = None
        self._cache[queue] = (time.monotonic(), depth)
        return depth

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "chimera_dlq_messages",
            "Messages in the dead-letter queue <queue>.dlq, read from the broker.",
            labels=["queue"],
        )


DLQS = DLQCollector()
REGISTRY.register(DLQS)
