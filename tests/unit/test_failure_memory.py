"""What the bus leaves behind after failing a message: not its body.

Every message the bus retries or dead-letters gets a log record. Wherever a
handler keeps records (pytest's log capture, a ``logging.handlers.MemoryHandler``)
each one lives on, so a record must not reach the delivery: an exception in its
args does, through its traceback's frames. tests/hostile/test_fuzz.py saw it as
RSS growing by the size of every garbage body it sent.
"""

from __future__ import annotations

import gc
import logging
import os
import tracemalloc
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventSubscriber
from messaging.generated import messages_pb2
from messaging.testing import MemoryBus
from messaging.topology import dlq_name
from messaging.transport.base import Properties

EXCHANGE, QUEUE, KEY = "mem.events", "mem.work", "mem.request"
BODIES, SIZE = 16, 1_000_000


class _Keeper(logging.Handler):
    """Keeps every record, as pytest's capture and a MemoryHandler do."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # as a stream handler does: sets record.message
        self.records.append(record)


class _Failing(EventSubscriber):
    def __init__(self, pool: ConnectionPool, retry_delays: tuple[float, ...]) -> None:
        super().__init__(
            connection_pool=pool,
            agent_name="keeper",
            exchange_name=EXCHANGE,
            queue_name=QUEUE,
            routing_keys=[KEY],
            retry_delays=retry_delays,
            prefetch_count=4,
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        raise RuntimeError("refusing")


@pytest.fixture
def keeper() -> Any:
    handler = _Keeper()
    logger = logging.getLogger("messaging")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize(
    ("content_type", "retry_delays"),
    [
        ("application/json", (60.0,)),
        ("application/x-protobuf", (60.0,)),
        ("application/x-protobuf", ()),
    ],
    ids=["undecodable", "raises-retried", "raises-dead-lettered"],
)
def test_kept_failure_records_do_not_hold_the_message_bodies(
    memory_bus: MemoryBus,
    keeper: _Keeper,
    content_type: str,
    retry_delays: tuple[float, ...],
) -> None:
    """16 bodies of 1 MB fail (undecodable: dead-lettered at once; a handler that
    raises: retried, or dead-lettered at once with its traceback in the record);
    once their copies are gone from the broker, what is still allocated is the
    records' text and tracebacks, not the 16 MB."""
    memory_bus.start(_Failing(memory_bus.pool, retry_delays))
    channel = memory_bus.broker.connect("raw").channel()
    props = Properties(content_type=content_type, message_type="chimera.v1.QueryRequest")
    failed = [dlq_name(QUEUE)] + ([f"{QUEUE}.retry.1"] if retry_delays else [])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(BODIES):
            # protobuf of a QueryRequest with a 1 MB ``query``: the handler gets to raise
            body = messages_pb2.QueryRequest(query=os.urandom(SIZE // 2).hex()).SerializeToString()
            channel.basic_publish(body, EXCHANGE, KEY, props)
        del body
        memory_bus.wait_until(
            lambda: sum(memory_bus.depth(queue) for queue in failed) == BODIES,
            what="every message failed",
        )
        memory_bus.drain(QUEUE)
        for queue in failed:
            channel.queue_purge(queue)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    failures = [r for r in keeper.records if r.levelno >= logging.WARNING]
    assert len(failures) == BODIES, [r.getMessage() for r in keeper.records]
    assert held < BODIES * SIZE / 4, f"{held / 2**20:.1f} MB still allocated"
