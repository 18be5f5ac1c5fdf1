"""Small subscribers and waiting helpers for the integration tests."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventSubscriber
from messaging.generated import messages_pb2
from tests import broker_env


def wait_for(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Recorder(EventSubscriber):
    """Records every message it handles; raises for texts in ``fail_on``."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        exchange: str,
        queue: str,
        routing_keys: Sequence[str],
        prefetch_count: int = 1,
        classes: dict[str, type[ProtoMessage]] | None = None,
        fail_on: Sequence[str] = (),
        handler_delay: float = 0.0,
        **options: Any,
    ) -> None:
        """``options``: any other EventSubscriber keyword (max_length, retry_delays, ...)."""
        self.classes = classes
        self.fail_on = set(fail_on)
        self.handler_delay = handler_delay
        self.received: list[tuple[ProtoMessage, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        super().__init__(
            connection_pool=pool,
            agent_name="recorder",
            exchange_name=exchange,
            queue_name=queue,
            routing_keys=list(routing_keys),
            prefetch_count=prefetch_count,
            **options,
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        if self.classes is None:
            return messages_pb2.QueryRequest
        return self.classes[routing_key]

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        if self.handler_delay:
            time.sleep(self.handler_delay)
        text = getattr(message, "query", "")
        if text in self.fail_on:
            raise RuntimeError(f"refusing {text!r}")
        with self.lock:
            self.received.append((message, properties))

    def texts(self) -> list[str]:
        with self.lock:
            return [getattr(m, "query", "") for m, _ in self.received]

    def run_in_thread(self) -> Recorder:
        self.thread = threading.Thread(target=self.start_consuming, daemon=True)
        self.thread.start()
        wait_for(lambda: self.is_consuming, what="the consumer to attach")
        return self

    def stop_and_join(self) -> None:
        self.stop()
        if self.thread is not None:
            self.thread.join(timeout=30)
            assert not self.thread.is_alive(), "start_consuming did not return after stop()"


def query(text: str, correlation_id: str | None = None) -> messages_pb2.QueryRequest:
    request = messages_pb2.QueryRequest(query=text)
    if correlation_id is not None:
        request.metadata.correlation_id = correlation_id
    return request


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    return subprocess.run(
        ["rabbitmqctl", *broker_env.ctl_args(), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


def queue_arguments(queue: str) -> dict[str, Any]:
    rows = json.loads(
        rabbitmqctl("list_queues", "name", "arguments", "--formatter", "json", "--quiet")
    )
    for row in rows:
        if row["name"] == queue:
            args = row["arguments"]
            if isinstance(args, list):  # [[key, type, value], ...]
                return {item[0]: item[-1] for item in args}
            return dict(args)
    raise AssertionError(f"queue {queue} not found on the broker")


def unacked(queue: str) -> int:
    rows = json.loads(
        rabbitmqctl(
            "list_queues", "name", "messages_unacknowledged", "--formatter", "json", "--quiet"
        )
    )
    for row in rows:
        if row["name"] == queue:
            return int(row["messages_unacknowledged"])
    raise AssertionError(f"queue {queue} not found on the broker")
