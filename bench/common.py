"""Shared pieces of the benchmark: names, the body, timing, topology (with pika).

Every worker (one implementation doing one work row, in its own process) gets a
:class:`BenchContext` naming its own exchange and queue, does the work, and
returns a :class:`Sample`. Topology is declared and deleted here, with pika, so
that it costs the same for every implementation and is never timed.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import pika

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

BODY_SIZE = 200
# Same bytes for every raw client; the bus rows send a protobuf message of about this size.
BODY = bytes(range(256))[:BODY_SIZE]
PERSISTENT = 2  # AMQP delivery_mode
PUBLISH_IN_FLIGHT = 256  # unconfirmed publishes kept in flight by the asyncio clients
MULTIPLE_ACK_EVERY = 50  # the multiple=True variant acks every K messages (prefetch 100)
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
WORKER_DEADLINE_S = 120.0  # no worker loop runs longer than this
CLEANUP_ATTEMPTS = 5  # 2 s apart


@dataclass(frozen=True)
class BenchContext:
    """What one worker is asked to do, and where (names unique to this worker)."""

    work: str
    impl: str
    messages: int
    prefetch: int
    url: str
    exchange: str
    queue: str
    routing_key: str
    body: bytes = BODY
    deadline_s: float = WORKER_DEADLINE_S

    def remaining(self, started: float) -> float:
        """Seconds left before this worker must give up (bounded loops)."""
        return max(0.0, self.deadline_s - (time.monotonic() - started))


@dataclass
class Sample:
    """One measurement of one implementation on one work row."""

    impl: str
    work: str
    messages: int
    seconds: float
    rate: float | None = None  # msg/s (publish, consume rows)
    p50_ms: float | None = None  # round trip (rpc row)
    p99_ms: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(**data)


def unique_name(kind: str, work: str, impl: str) -> str:
    """A broker name no other worker or test uses: bench.<kind>.<work>.<impl>.<uuid>."""
    safe = impl.replace("+", "-").replace(" ", "-")
    return f"bench.{kind}.{work}.{safe}.{uuid.uuid4().hex[:12]}"


def make_context(
    work: str, impl: str, messages: int, prefetch: int, deadline_s: float = WORKER_DEADLINE_S
) -> BenchContext:
    return BenchContext(
        work=work,
        impl=impl,
        messages=messages,
        prefetch=prefetch,
        url=AMQP_URL,
        exchange=unique_name("x", work, impl),
        queue=unique_name("q", work, impl),
        routing_key=f"bench.{work}",
        deadline_s=deadline_s,
    )


def rate_sample(ctx: BenchContext, count: int, seconds: float, **notes: Any) -> Sample:
    rate = count / seconds if seconds > 0 else None
    return Sample(ctx.impl, ctx.work, count, seconds, rate=rate, notes=dict(notes))


def latency_sample(ctx: BenchContext, latencies_s: Sequence[float], seconds: float) -> Sample:
    """p50/p99 of round trips (nearest-rank percentiles)."""
    ordered = sorted(latencies_s)
    if not ordered:
        return Sample(ctx.impl, ctx.work, 0, seconds)

    def pct(p: float) -> float:
        idx = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[idx] * 1000.0

    return Sample(
        ctx.impl,
        ctx.work,
        len(ordered),
        seconds,
        rate=len(ordered) / seconds if seconds > 0 else None,
        p50_ms=pct(50),
        p99_ms=pct(99),
        notes={"mean_ms": statistics.fmean(ordered) * 1000.0},
    )


class Stopwatch:
    """perf_counter between start() and stop(); stop() may be called once the work is done.

    Also the CPU the whole process (every thread) spent in between: on a
    loaded machine wall time swings by 2x, CPU per message far less. The
    worker reports the last stopwatch's CPU (``last_cpu_seconds``).
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.stopped = 0.0
        self.cpu_started = 0.0
        self.cpu_stopped = 0.0

    def start(self) -> None:
        global _last
        _last = self
        self.cpu_started = time.process_time()
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.stopped = time.perf_counter()
        self.cpu_stopped = time.process_time()

    @property
    def seconds(self) -> float:
        return self.stopped - self.started

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_stopped - self.cpu_started


_last: Stopwatch | None = None


def last_cpu_seconds() -> float | None:
    """CPU (all threads) of this process between the last Stopwatch's start and stop."""
    if _last is None or _last.stopped < _last.started:
        return None
    return _last.cpu_seconds


def _blocking(url: str) -> Any:
    return pika.BlockingConnection(pika.URLParameters(url))


def close_quietly(conn: Any) -> None:
    """Close a pika connection unless the broker already did (keeps the real error)."""
    if conn.is_open:
        conn.close()


def declare(ctx: BenchContext) -> None:
    """Durable topic exchange bound to a durable queue, both named for this worker only."""
    conn = _blocking(ctx.url)
    try:
        ch = conn.channel()
        ch.exchange_declare(ctx.exchange, exchange_type="topic", durable=True)
        ch.queue_declare(ctx.queue, durable=True)
        ch.queue_bind(ctx.queue, ctx.exchange, routing_key=ctx.routing_key)
    finally:
        close_quietly(conn)


def delete_names(url: str, queues: Sequence[str], exchanges: Sequence[str]) -> None:
    """Delete queues and exchanges, retrying for a while if the broker is away.

    Best effort: a worker that failed because the broker restarted under it
    (other people's fault tests share it) still removes what it declared.
    """
    for attempt in range(CLEANUP_ATTEMPTS):
        if attempt:
            time.sleep(2.0)
        try:
            conn = _blocking(url)
        except Exception:
            continue
        try:
            ch = conn.channel()
            for queue in queues:
                ch.queue_delete(queue)
            for exchange in exchanges:
                ch.exchange_delete(exchange)
            return
        except Exception:
            continue
        finally:
            close_quietly(conn)


def delete(ctx: BenchContext) -> None:
    """Delete what declare() made."""
    delete_names(ctx.url, [ctx.queue], [ctx.exchange])


@contextmanager
def topology(ctx: BenchContext) -> Iterator[None]:
    declare(ctx)
    try:
        yield
    finally:
        delete(ctx)


def prefill(
    ctx: BenchContext,
    count: int,
    body: bytes | None = None,
    properties: dict[str, Any] | None = None,
) -> None:
    """Put `count` persistent messages on ctx.queue (through the exchange); not timed.

    Publishes without confirms (fast), then polls the queue depth until all
    `count` messages are there, or raises after the worker's deadline.
    """
    conn = _blocking(ctx.url)
    try:
        ch = conn.channel()
        props = pika.BasicProperties(delivery_mode=PERSISTENT, **(properties or {}))
        payload = ctx.body if body is None else body
        for _ in range(count):
            ch.basic_publish(ctx.exchange, ctx.routing_key, payload, properties=props)
        started = time.monotonic()
        while ctx.remaining(started) > 0:
            depth = ch.queue_declare(ctx.queue, passive=True).method.message_count
            if depth >= count:
                return
            conn.sleep(0.05)
        raise TimeoutError(f"prefill: queue {ctx.queue} never reached {count} messages")
    finally:
        close_quietly(conn)
