"""pika 1.4 BlockingConnection: the blocking client (one confirm at a time)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pika
from common import (
    DIRECT_REPLY_TO,
    PERSISTENT,
    BenchContext,
    Sample,
    Stopwatch,
    close_quietly,
    latency_sample,
    rate_sample,
)
from registry import register


def _connect(ctx: BenchContext) -> Any:
    return pika.BlockingConnection(pika.URLParameters(ctx.url))


@register("pika", "publish")
def publish(ctx: BenchContext) -> Sample:
    conn = _connect(ctx)
    try:
        ch = conn.channel()
        ch.confirm_delivery()  # basic_publish now blocks until the broker confirms
        props = pika.BasicProperties(delivery_mode=PERSISTENT)
        sw = Stopwatch()
        sw.start()
        for _ in range(ctx.messages):
            ch.basic_publish(ctx.exchange, ctx.routing_key, ctx.body, props, mandatory=True)
        sw.stop()
        return rate_sample(ctx, ctx.messages, sw.seconds)
    finally:
        close_quietly(conn)


@register("pika", "consume100", "consume1")
def consume(ctx: BenchContext) -> Sample:
    conn = _connect(ctx)
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=ctx.prefetch)
        sw = Stopwatch()
        acked = 0

        def on_message(channel: Any, method: Any, _props: Any, _body: bytes) -> None:
            nonlocal acked
            channel.basic_ack(method.delivery_tag)
            acked += 1
            if acked == ctx.messages:
                sw.stop()
                channel.stop_consuming()

        # Bounded: give up (and report what was acked) at the deadline.
        conn.call_later(ctx.deadline_s, ch.stop_consuming)
        sw.start()
        ch.basic_consume(ctx.queue, on_message, auto_ack=False)
        ch.start_consuming()
        if acked < ctx.messages:
            sw.stop()
        return rate_sample(ctx, acked, sw.seconds)
    finally:
        close_quietly(conn)


def _responder(ctx: BenchContext, ready: threading.Event, stop: threading.Event) -> None:
    """Consume the request queue, reply to reply_to with the same body, ack."""
    conn = _connect(ctx)
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=100)

        def on_request(channel: Any, method: Any, props: Any, body: bytes) -> None:
            reply = pika.BasicProperties(correlation_id=props.correlation_id)
            channel.basic_publish("", props.reply_to, body, reply)
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(ctx.queue, on_request, auto_ack=False)
        ready.set()
        deadline = time.monotonic() + ctx.deadline_s
        while not stop.is_set() and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    finally:
        close_quietly(conn)


@register("pika", "rpc")
def rpc(ctx: BenchContext) -> Sample:
    ready, stop = threading.Event(), threading.Event()
    responder = threading.Thread(target=_responder, args=(ctx, ready, stop), daemon=True)
    responder.start()
    conn = _connect(ctx)
    try:
        if not ready.wait(30):
            raise TimeoutError("pika responder did not start")
        ch = conn.channel()
        replies: dict[str, bytes] = {}

        def on_reply(_ch: Any, _method: Any, props: Any, body: bytes) -> None:
            replies[props.correlation_id] = body

        ch.basic_consume(DIRECT_REPLY_TO, on_reply, auto_ack=True)
        latencies: list[float] = []
        started = time.monotonic()
        sw = Stopwatch()
        sw.start()
        for i in range(ctx.messages):
            cid = str(i)
            props = pika.BasicProperties(
                delivery_mode=PERSISTENT, correlation_id=cid, reply_to=DIRECT_REPLY_TO
            )
            t0 = time.perf_counter()
            ch.basic_publish("", ctx.queue, ctx.body, props)
            while cid not in replies and ctx.remaining(started) > 0:
                conn.process_data_events(time_limit=None)
            if cid not in replies:
                break
            latencies.append(time.perf_counter() - t0)
            del replies[cid]
        sw.stop()
        return latency_sample(ctx, latencies, sw.seconds)
    finally:
        stop.set()
        close_quietly(conn)
        responder.join(10)
