"""The soak row: does the bus's memory stay flat under a long run?

One worker, two phases, RSS (``/proc/self/statm``) sampled every 1 % of each:

1. **consume**: a sync ``EventSubscriber`` (prefetch 100) decodes and acks N
   messages (default 1,000,000). A feeder *process* (pika, no confirms, so its
   memory is not ours) keeps the queue topped up between FEED_LOW and FEED_HIGH
   messages, so the broker never holds a million at once.
2. **rpc**: N/10 requests (default 100,000) through ``EventPublisher.request``
   (sync API), RPC_CALLERS threads at once, against a responder process (pika)
   that answers every request except every TIMEOUT_EVERY-th: those time out
   after RPC_TIMEOUT_S (``RequestTimeoutError``), so the timed-out path is soaked
   too, and the late reply that never comes leaves nothing behind.

A phase is flat when its highest RSS after warm-up (the first 10 %) is within
FLAT_WITHIN of the RSS at the end of warm-up. The row runs outside the
per-row deadline (SOAK_DEADLINE_S).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pika
from common import PERSISTENT, BenchContext, Sample, close_quietly
from google.protobuf.message import Message as ProtoMessage
from impl_bus import AGENT, BODY, MESSAGE, PROPERTIES, cleanup, config_from_url, prepare
from registry import register

from messaging import ConnectionPool, EventPublisher, EventSubscriber, RequestTimeoutError
from messaging.generated.messages_pb2 import QueryRequest

FEED_LOW, FEED_HIGH = 20_000, 40_000  # queue depth the feeder keeps
RPC_CALLERS = 8  # threads calling request() at once
RPC_TIMEOUT_S = 0.5
TIMEOUT_EVERY = 100  # the responder ignores every 100th request
WARM_UP = 0.10  # the first 10 % of a phase is warm-up
FLAT_WITHIN = 0.10
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class RssTrace:
    """RSS sampled at 1 % steps of a phase of ``total`` units."""

    total: int
    samples: list[tuple[int, int]] = field(default_factory=list)  # (done, rss)
    _next: int = 0

    def tick(self, done: int) -> None:
        if done >= self._next:
            self.samples.append((done, rss_bytes()))
            self._next = done + max(1, self.total // 100)

    def summary(self) -> dict[str, Any]:
        warm_at = self.total * WARM_UP
        after = [rss for done, rss in self.samples if done >= warm_at]
        if len(after) < 2:
            return {"flat": None, "samples": len(self.samples)}
        warm, peak, end = after[0], max(after), after[-1]
        growth = peak / warm - 1.0
        return {
            "rss_warm_mib": round(warm / 2**20, 1),
            "rss_peak_mib": round(peak / 2**20, 1),
            "rss_end_mib": round(end / 2**20, 1),
            "growth": round(growth, 4),
            "flat": growth <= FLAT_WITHIN,
            "samples": len(self.samples),
        }


# -- phase 1: consume ------------------------------------------------------


def _feed(url: str, exchange: str, routing_key: str, queue: str, total: int) -> None:
    """Feeder process: publish ``total`` bus messages, keeping the queue between the marks."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        props = pika.BasicProperties(delivery_mode=PERSISTENT, **PROPERTIES)
        sent = 0
        while sent < total:
            depth = ch.queue_declare(queue, passive=True).method.message_count
            if depth > FEED_LOW:
                conn.sleep(0.02)
                continue
            for _ in range(min(FEED_HIGH - depth, total - sent)):
                ch.basic_publish(exchange, routing_key, BODY, properties=props)
                sent += 1
    finally:
        close_quietly(conn)


class _Soaker(EventSubscriber):
    def __init__(self, pool: ConnectionPool, ctx: BenchContext, trace: RssTrace) -> None:
        self.expected = ctx.messages
        self.handled = 0
        self.trace = trace
        super().__init__(
            pool,
            AGENT,
            exchange_name=ctx.exchange,
            queue_name=ctx.queue,
            routing_keys=(ctx.routing_key,),
            prefetch_count=100,
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.handled += 1
        self.trace.tick(self.handled)
        if self.handled == self.expected:
            self.stop()


def _consume_phase(ctx: BenchContext, pool: ConnectionPool) -> tuple[int, float, RssTrace]:
    trace = RssTrace(ctx.messages)
    spawn = multiprocessing.get_context("spawn")
    feeder = spawn.Process(
        target=_feed,
        args=(ctx.url, ctx.exchange, ctx.routing_key, ctx.queue, ctx.messages),
        daemon=True,
    )
    feeder.start()
    subscriber = _Soaker(pool, ctx, trace)
    timer = threading.Timer(ctx.deadline_s, subscriber.stop)
    timer.daemon = True
    timer.start()
    t0 = time.perf_counter()
    try:
        subscriber.start_consuming()
    finally:
        timer.cancel()
        feeder.join(10)
        if feeder.is_alive():
            feeder.kill()
    return subscriber.handled, time.perf_counter() - t0, trace


# -- phase 2: rpc ----------------------------------------------------------


def _respond(url: str, queue: str, ready: Any, stop: Any) -> None:
    """Responder process: answer each request with itself, except every TIMEOUT_EVERY-th."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)
        seen = 0

        def on_request(channel: Any, method: Any, props: Any, body: bytes) -> None:
            nonlocal seen
            seen += 1
            if seen % TIMEOUT_EVERY:
                reply = pika.BasicProperties(
                    correlation_id=props.correlation_id,
                    content_type=props.content_type,
                    type=props.type,
                )
                channel.basic_publish("", props.reply_to, body, reply)
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(queue, on_request, auto_ack=False)
        ready.set()
        while not stop.is_set():
            conn.process_data_events(time_limit=0.05)
    finally:
        close_quietly(conn)


def _rpc_phase(ctx: BenchContext, pool: ConnectionPool) -> tuple[int, int, float, RssTrace]:
    total = max(RPC_CALLERS, ctx.messages // 10)
    trace = RssTrace(total)
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Event(), spawn.Event()
    responder = spawn.Process(target=_respond, args=(ctx.url, ctx.queue, ready, stop), daemon=True)
    responder.start()
    lock = threading.Lock()
    done = timed_out = 0
    t0 = time.perf_counter()
    try:
        if not ready.wait(60):
            raise TimeoutError("soak responder did not start")
        with EventPublisher(pool, AGENT, ctx.exchange) as publisher:
            deadline = time.monotonic() + ctx.deadline_s

            def caller(count: int) -> None:
                nonlocal done, timed_out
                for _ in range(count):
                    if time.monotonic() > deadline:
                        return
                    # Each request its own correlation id (the bench message carries one).
                    request = QueryRequest()
                    request.CopyFrom(MESSAGE)
                    request.metadata.correlation_id = uuid.uuid4().hex
                    try:
                        publisher.request(request, ctx.routing_key, timeout=RPC_TIMEOUT_S)
                        late = 0
                    except RequestTimeoutError:
                        late = 1
                    with lock:
                        done += 1
                        timed_out += late
                        trace.tick(done)

            shares = [total // RPC_CALLERS + (i < total % RPC_CALLERS) for i in range(RPC_CALLERS)]
            with ThreadPoolExecutor(RPC_CALLERS) as callers:
                for f in [callers.submit(caller, n) for n in shares]:
                    f.result()
    finally:
        stop.set()
        responder.join(10)
        if responder.is_alive():
            responder.kill()
    return done, timed_out, time.perf_counter() - t0, trace


@register("bus", "soak", raw=False, prepare=prepare, cleanup=cleanup)
def soak(ctx: BenchContext) -> Sample:
    with ConnectionPool(config_from_url(ctx.url)) as pool:
        pool.connect()
        consumed, consume_s, consume_trace = _consume_phase(ctx, pool)
        requests, timed_out, rpc_s, rpc_trace = _rpc_phase(ctx, pool)
    notes: dict[str, Any] = {
        "consumed": consumed,
        "consume_seconds": round(consume_s, 1),
        "consume_rss": consume_trace.summary(),
        "requests": requests,
        "timed_out": timed_out,
        "rpc_seconds": round(rpc_s, 1),
        "rpc_rss": rpc_trace.summary(),
    }
    rate = consumed / consume_s if consume_s > 0 else None
    return Sample(ctx.impl, ctx.work, consumed, consume_s + rpc_s, rate=rate, notes=notes)
