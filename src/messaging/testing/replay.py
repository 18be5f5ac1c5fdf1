"""A recorded conversation replayed as a test: same first message, same hops expected.

Load what the flight recorder saw (``chimera-bus trace ID --export FILE``, or
the stream itself), start your agents on a :class:`~messaging.testing.MemoryBus`,
send the conversation's first message again, and compare the hops (which
agent handled what, sent by whom, with which outcome) with the recorded ones::

    conversation = Conversation.load("tests/recorded/btc.jsonl")
    hops = conversation.watch(memory_bus.pool)          # before the agents start
    memory_bus.start(QueryAgent(memory_bus.pool))
    ...
    conversation.replay(memory_bus)
    conversation.assert_same_hops(hops)

The first message's body must have been recorded: run the sending agent with
``RECORDER__BODIES=<its name>`` (``*``: all), under the size cap.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.envelope import Envelope
from messaging.aio.middleware import Middleware
from messaging.config import RabbitMQConfig
from messaging.connection import ConnectionPool
from messaging.publisher import EventPublisher
from messaging.recorder.reader import read_records
from messaging.recorder.record import Record, decode, encode
from messaging.recorder.settings import load_recorder_settings
from messaging.recorder.timeline import build
from messaging.serialization import deserialize, message_class_for
from messaging.testing.bus import MemoryBus
from messaging.transport.stream_message import Offset


@dataclass(frozen=True, slots=True)
class Hop:
    """One message handled by one agent."""

    sender: str | None
    handler: str
    type: str | None
    routing_key: str | None
    outcome: str | None
    error_type: str | None = None

    def __str__(self) -> str:
        end = self.outcome if self.error_type is None else f"{self.outcome} {self.error_type}"
        return f"{self.sender} -> {self.handler}: {self.type} on {self.routing_key} ({end})"


class HopWatcher(Middleware):
    """Notes every delivery its pool's agents handle, as a :class:`Hop`."""

    def __init__(self) -> None:
        self._hops: list[Hop] = []
        self._lock = threading.Lock()

    @property
    def hops(self) -> list[Hop]:
        with self._lock:
            return list(self._hops)

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        properties = envelope.properties
        hop = Hop(
            sender=properties.get("app_id"),
            handler=envelope.agent_name,
            type=properties.get("type") or envelope.message.DESCRIPTOR.full_name,
            routing_key=envelope.routing_key,
            outcome=None,  # still running
        )
        with self._lock:  # in the order handlers start, as the recorder orders them
            index = len(self._hops)
            self._hops.append(hop)
        try:
            yield
        except Exception as exc:
            kind = type(exc)
            error_type = f"{kind.__module__}.{kind.__qualname__}"
            with self._lock:
                self._hops[index] = replace(hop, outcome="error", error_type=error_type)
            raise
        with self._lock:
            self._hops[index] = replace(hop, outcome="ok")


class Conversation:
    """The records of one conversation, in time order."""

    def __init__(self, records: list[Record]) -> None:
        if not records:
            raise ValueError("a conversation needs at least one record")
        self.records = sorted(records, key=lambda r: (r.ts, 0 if r.kind == "publish" else 1))

    @classmethod
    def load(cls, path: str | Path, correlation_id: str | None = None) -> Conversation:
        """From a file of records (``chimera-bus trace ID --export FILE``)."""
        decoded = decode(Path(path).read_bytes())
        if decoded.skipped:
            raise ValueError(f"{path}: {decoded.skipped} line(s) are not flight-recorder records")
        return cls(_of(decoded.records, correlation_id))

    @classmethod
    def read(
        cls,
        config: RabbitMQConfig,
        correlation_id: str,
        *,
        stream: str | None = None,
        since: Offset = "first",
    ) -> Conversation:
        """From the recorder's stream (``RECORDER__STREAM`` unless ``stream``), from ``since``."""
        name = stream or load_recorder_settings().stream
        reading = asyncio.run(read_records(config, name, since, correlation_id=correlation_id))
        if not reading.records:
            raise LookupError(f"no record of conversation {correlation_id!r} in {name}")
        return cls(reading.records)

    def save(self, path: str | Path) -> None:
        """Write the records as ``chimera-bus trace --export`` does (JSON lines)."""
        Path(path).write_bytes(encode(self.records))

    @property
    def correlation_id(self) -> str | None:
        return self.records[0].correlation_id

    @property
    def first(self) -> Record:
        """The first message sent in the conversation."""
        for record in self.records:
            if record.kind == "publish":
                return record
        raise ValueError("the conversation has no recorded publish to start from")

    def first_message(self) -> ProtoMessage:
        first = self.first
        if first.body is None or first.body_truncated:
            why = "cut at the size cap" if first.body_truncated else "not recorded"
            raise ValueError(
                f"the body of the first message ({first.type} from {first.agent}) was {why}: "
                f"record it with RECORDER__BODIES={first.agent} (and a RECORDER__BODY_MAX_BYTES "
                f"that holds it)"
            )
        return deserialize(base64.b64decode(first.body), message_class_for(first.type or ""))

    def hops(self) -> list[Hop]:
        """The recorded hops: each handled delivery, in time order."""
        return [
            Hop(
                step.sender,
                step.record.agent,
                step.record.type,
                step.record.routing_key,
                step.record.outcome,
                step.record.error_type,
            )
            for step in build(self.records).steps
            if step.record.kind == "handle"
        ]

    @staticmethod
    def watch(pool: ConnectionPool) -> HopWatcher:
        """Watch what ``pool``'s agents handle; call before they start consuming."""
        watcher = HopWatcher()
        pool.use(watcher)
        return watcher

    def replay(self, bus: MemoryBus, *, timeout: float = 5.0) -> str:
        """Send the first message again on ``bus``, as its sender did; returns its message id.

        A request (it had ``reply_to``) is sent with ``request()`` and its answer
        awaited; an event is published. Either way, it returns once every queue
        on the bus is settled.
        """
        first = self.first
        message = self.first_message()
        publisher = EventPublisher(bus.pool, first.agent, first.exchange or "chimera.events")
        try:
            if first.reply_to:
                publisher.request(message, first.routing_key or "", timeout=timeout)
                sent = ""
            else:
                sent = publisher.publish(
                    message, first.routing_key or "", correlation_id=first.correlation_id
                )
        finally:
            publisher.close()
        queues = [
            name
            for name in bus.broker.queue_names()
            if (state := bus.broker.queue_state(name)) is not None
            and state.arguments.get("x-queue-type") != "stream"  # a stream never empties
        ]
        bus.drain(*queues, timeout=timeout)
        return sent

    def assert_same_hops(self, watcher: HopWatcher, timeout: float = 5.0) -> None:
        """Fail unless the replay took the recorded hops, in the same order."""
        expected = self.hops()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = watcher.hops
            if len(seen) >= len(expected) and all(h.outcome is not None for h in seen):
                break
            time.sleep(0.005)
        got = watcher.hops
        if got != expected:
            raise AssertionError(
                "the replay took other hops than the recorded conversation\n"
                "recorded:\n"
                + "".join(f"  {h}\n" for h in expected)
                + "replayed:\n"
                + "".join(f"  {h}\n" for h in got)
            )


def _of(records: list[Record], correlation_id: str | None) -> list[Record]:
    if correlation_id is None:
        ids = {r.correlation_id for r in records}
        if len(ids) > 1:
            raise ValueError(
                f"the file holds {len(ids)} conversations: name one with correlation_id="
            )
        return records
    return [r for r in records if r.correlation_id == correlation_id]
