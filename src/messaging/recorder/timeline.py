"""A conversation's records as a timeline: who sent what to whom, and how long each hop took."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from messaging.recorder.record import Record


@dataclass(frozen=True, slots=True)
class Step:
    record: Record
    at_ms: float
    """Milliseconds since the conversation's first record."""
    sender: str | None = None
    """A handled message: the agent that sent it, when its publish was recorded."""
    handlers: tuple[str, ...] = ()
    """A sent message: the agents whose handling of it was recorded."""
    hop_ms: float | None = None
    """A handled message: from its publish to its handler's start (broker and queue time)."""

    @property
    def failed(self) -> bool:
        return self.record.outcome == "error"

    @property
    def is_reply(self) -> bool:
        return _is_reply(self.record)


@dataclass(frozen=True, slots=True)
class Timeline:
    steps: tuple[Step, ...]
    agents: tuple[str, ...] = field(default=())
    """In the order they first appear."""

    @property
    def duration_ms(self) -> float:
        if not self.steps:
            return 0.0
        last = self.steps[-1]
        end = last.at_ms + (last.record.duration_ms or 0.0)
        return max(end, max(s.at_ms + (s.record.duration_ms or 0.0) for s in self.steps))

    @property
    def failures(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.failed)


def build(records: Iterable[Record]) -> Timeline:
    """The records in time order, each publish linked to the handling of the same message."""
    ordered = sorted(records, key=lambda r: (r.ts, 0 if r.kind == "publish" else 1))
    if not ordered:
        return Timeline(())
    start = ordered[0].ts
    sent: dict[str, Record] = {}
    handled_by: dict[str, list[str]] = {}
    for record in ordered:
        if record.message_id is None:
            continue
        if record.kind == "publish":
            sent.setdefault(record.message_id, record)
        else:
            seen_by = handled_by.setdefault(record.message_id, [])
            if record.agent not in seen_by:
                seen_by.append(record.agent)
    steps = []
    agents: dict[str, None] = {}
    for record in ordered:
        agents.setdefault(record.agent, None)
        at_ms = round((record.ts - start) * 1000, 3)
        mid = record.message_id
        if record.kind == "publish":
            handlers = tuple(handled_by.get(mid, ())) if mid else ()
            if not handlers and _is_reply(record):
                asker = _asker(record, ordered, handled_by)
                handlers = (asker,) if asker else ()
            steps.append(Step(record, at_ms, handlers=handlers))
            continue
        publish = sent.get(mid) if mid else None
        steps.append(
            Step(
                record,
                at_ms,
                sender=publish.agent if publish else None,
                hop_ms=round((record.ts - publish.ts) * 1000, 3) if publish else None,
            )
        )
    return Timeline(tuple(steps), tuple(agents))


def _is_reply(record: Record) -> bool:
    key = record.routing_key or ""
    return record.exchange in (None, "") and key.startswith("amq.rabbitmq.reply-to")


def _asker(reply: Record, ordered: list[Record], handled_by: dict[str, list[str]]) -> str | None:
    """Who a reply goes to: the latest request before it (a publish with ``reply_to``)
    that the replying agent handled. The reply's own address is the broker's, unrecorded."""
    asker = None
    for record in ordered:
        if record is reply:
            break
        if (
            record.kind == "publish"
            and record.reply_to
            and record.message_id
            and reply.agent in handled_by.get(record.message_id, ())
        ):
            asker = record.agent
    return asker
