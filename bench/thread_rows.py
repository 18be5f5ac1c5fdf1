"""The sync bus alone, from the main thread and from a worker thread.

Publishes N messages one at a time (each waits for its confirm), then consumes
them at prefetch 1, and prints the rate and this process's CPU per message.
It was written to A/B the lent event loop (experiments/lend-the-loop.patch)
where a lent loop is cheap (a worker thread) and where uvloop makes it dear
(the main thread). Run it in alternating trees and compare medians: one run
says little on a noisy machine.

    BENCH_AMQP_URL=amqp://guest:guest@127.0.0.1:5690/%2F \\
        .venv/bin/python bench/thread_rows.py --messages 2000 main thread
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from typing import Any

from common import delete_names
from google.protobuf.message import Message as ProtoMessage
from impl_bus import MESSAGE, config_from_url

from messaging import ConnectionPool, EventPublisher, EventSubscriber
from messaging.generated.messages_pb2 import QueryRequest
from messaging.topology import dlq_name, dlx_name


class _Counter(EventSubscriber):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, expected: int) -> None:
        super().__init__(pool, "thread-rows", exchange, queue, routing_keys=["k"], prefetch_count=1)
        self.expected = expected
        self.handled = 0

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.handled += 1
        if self.handled == self.expected:
            self.stop()


def _rows(url: str, messages: int) -> dict[str, tuple[float, float]]:
    """``{row: (msg/s, CPU µs per message)}`` for publish and consume1, on this thread."""
    exchange = f"bench.x.threads.{uuid.uuid4().hex[:8]}"
    queue = f"bench.q.threads.{uuid.uuid4().hex[:8]}"
    rows: dict[str, tuple[float, float]] = {}
    try:
        with (
            ConnectionPool(config_from_url(url)) as pool,
            EventPublisher(pool, "thread-rows", exchange) as publisher,
        ):
            subscriber = _Counter(pool, exchange, queue, messages)
            # Declare the queue (start, then stop at once) so that publishes reach it.
            threading.Timer(0.3, subscriber.stop).start()
            subscriber.start_consuming()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(messages):
                publisher.publish(MESSAGE, "k")
            rows["publish"] = _rate(messages, wall, cpu)
            timer = threading.Timer(120, subscriber.stop)  # bounded
            timer.start()
            wall, cpu = time.perf_counter(), time.process_time()
            subscriber.start_consuming()
            rows["consume1"] = _rate(subscriber.handled, wall, cpu)
            timer.cancel()
    finally:
        delete_names(url, [queue, dlq_name(queue)], [exchange, dlx_name(exchange)])
    return rows


def _rows_into(result: dict[str, tuple[float, float]], url: str, messages: int) -> None:
    result.update(_rows(url, messages))


def _rate(count: int, wall: float, cpu: float) -> tuple[float, float]:
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("where", nargs="+", choices=["main", "thread"])
    args = parser.parse_args()
    url = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    for where in args.where:
        result: dict[str, tuple[float, float]] = {}
        if where == "main":
            result.update(_rows(url, args.messages))
        else:
            worker = threading.Thread(target=_rows_into, args=(result, url, args.messages))
            worker.start()
            worker.join()
        print(
            f"{where:6} "
            + "  ".join(
                f"{row} {rate:,.0f}/s cpu {cpu:.0f}us" for row, (rate, cpu) in result.items()
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
