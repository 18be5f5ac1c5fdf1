"""What the console reads from the broker and does to it.

Dead letters are read and acted on with the same code as ``chimera-bus dlq``
(:mod:`messaging.cli.dlq`): reading puts every message back, replay acks a dead
letter only after the broker confirmed its copy, and a selection touches
nothing it does not pick.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.progress import Progress

from messaging.cli import dlq
from messaging.cli._letters import headers_of, original_target, plain, why
from messaging.cli._selection import Selection
from messaging.cli.trace import as_record
from messaging.config import RabbitMQConfig
from messaging.discovery import AgentCard, Directory
from messaging.errors import MessagingError, TopologyError
from messaging.headers import ERROR_TYPE
from messaging.recorder.reader import read_records
from messaging.recorder.record import Record
from messaging.recorder.timeline import build
from messaging.transport import Delivery

CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,199}")
"""What a correlation id may look like here: no markup, no spaces, no control characters."""

RECENT = timedelta(minutes=5)
"""Without discovery, an agent is live when it has a record this recent."""

READ_LIMIT = 1000
"""Dead letters read per DLQ for the page (all put back)."""


class BadRequestError(ValueError):
    """The request cannot be done as asked; nothing was changed. ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_correlation_id(value: str) -> str:
    if not CORRELATION_ID.fullmatch(value):
        raise BadRequestError(
            "a correlation id is 1 to 200 letters, digits and . _ : @ + = / - (no spaces or markup)"
        )
    return value


@dataclass
class Bus:
    """The broker as the console sees it: the work queues it watches, the recorder's stream,
    and the agents heard on discovery (the :class:`Directory`, started by the app)."""

    config: RabbitMQConfig
    stream: str
    queues: tuple[str, ...] = ()
    directory: Directory | None = None
    _recent: tuple[float, list[dict[str, Any]]] = field(default=(0.0, []), repr=False)
    _flow: tuple[float, dict[str, Any]] = field(default=(0.0, {}), repr=False)
    _dlq_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """One DLQ operation at a time: reading holds every dead letter unacked until it is
    done, so a replay running beside the page's next poll would not see them."""

    # -- agents -------------------------------------------------------------

    def cards(self) -> list[AgentCard]:
        return self.directory.agents() if self.directory is not None else []

    async def agents(self) -> dict[str, Any]:
        """Announced agents; when none announces, those with a recent record."""
        cards = self.cards()
        if cards:
            return {"source": "discovery", "agents": [agent_of(card) for card in cards]}
        return {"source": "recorder", "agents": await self.recorded_agents()}

    async def recorded_agents(self) -> list[dict[str, Any]]:
        at, cached = self._recent
        if time.monotonic() - at < 5.0:  # the page polls; the stream is read at most every 5 s
            return cached
        try:
            reading = await read_records(
                self.config, self.stream, datetime.now(UTC) - RECENT, idle=0.3
            )
        except MessagingError:  # no stream yet (recorder off): no agent known this way
            reading = None
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for record in reading.records if reading else ():
            seen[(record.agent, record.instance)] = {
                "name": record.agent,
                "instance": record.instance,
                "queue": None,
                "last_seen": datetime.fromtimestamp(record.ts, UTC).isoformat(),
            }
        agents = sorted(seen.values(), key=lambda a: (a["name"], a["instance"]))
        self._recent = (time.monotonic(), agents)
        return agents

    # -- dead letters -------------------------------------------------------

    def watched(self) -> list[str]:
        """The work queues whose DLQs the console reads: those given, and announced agents'."""
        names = dict.fromkeys(self.queues)
        names.update(dict.fromkeys(card.queue for card in self.cards() if card.queue))
        return list(names)

    def agent_of_queue(self, queue: str) -> str:
        names = sorted({card.name for card in self.cards() if card.queue == queue})
        return ", ".join(names) if names else queue

    async def dead_letters(self) -> dict[str, Any]:
        """Every watched DLQ's dead letters, grouped by agent (queue) and error type."""
        groups: dict[tuple[str, str | None], dict[str, Any]] = {}
        queues = []
        for queue in self.watched():
            try:
                async with self._dlq_lock:
                    info, letters = await dlq.peek(queue, READ_LIMIT)
            except TopologyError:
                continue  # no DLQ: nothing has died there
            queues.append({"queue": queue, "dlq": info.name, "messages": info.messages})
            for letter in letters:
                error_type = letter_error_type(letter)
                group = groups.setdefault(
                    (queue, error_type),
                    {
                        "queue": queue,
                        "agent": self.agent_of_queue(queue),
                        "error_type": error_type,
                        "letters": [],
                    },
                )
                group["letters"].append(summary(letter, queue))
        ordered = sorted(groups.values(), key=lambda g: (g["agent"], g["error_type"] or ""))
        for group in ordered:
            group["count"] = len(group["letters"])
        return {"queues": queues, "groups": ordered}

    def known_queue(self, queue: str) -> str:
        if queue not in self.watched():
            raise BadRequestError(f"{queue!r} is not a queue this console watches", 404)
        return queue

    async def selected(self, queue: str, selection: Selection) -> list[Delivery]:
        """The dead letters ``selection`` picks now; 404 when an id or group is not there."""
        try:
            _, letters = await dlq.peek(queue, 10**9)
        except TopologyError as exc:
            raise BadRequestError(str(exc), 404) from None
        picked = [letter for letter in letters if selection.matches(letter)]
        present = {str(letter.properties.message_id) for letter in picked}
        missing = sorted(selection.ids - present)
        if missing:
            raise BadRequestError(
                f"no dead letter with id {', '.join(missing)} in {queue}.dlq", 404
            )
        if not picked:
            raise BadRequestError(
                f"no dead letter matches {selection.describe()} in {queue}.dlq", 404
            )
        return picked

    async def replay(self, queue: str, selection: Selection) -> dict[str, Any]:
        async with self._dlq_lock:
            await self.selected(self.known_queue(queue), selection)
            with Progress(disable=True) as progress:
                report = await dlq.replay_letters(queue, None, False, progress, selection)
        return {
            "did": "replay",
            "queue": queue,
            "selection": selection.describe(),
            "replayed": report.replayed,
            "of": report.total,
            "failed": [{"message_id": mid, "why": reason} for mid, reason in report.failed],
        }

    async def purge(self, queue: str, selection: Selection) -> dict[str, Any]:
        async with self._dlq_lock:
            await self.selected(self.known_queue(queue), selection)
            purged = await dlq.purge_queue(queue, selection)
        return {
            "did": "purge",
            "queue": queue,
            "selection": selection.describe(),
            "purged": purged,
        }

    # -- flow ---------------------------------------------------------------

    async def flow(self) -> dict[str, Any]:
        """Who talks to whom over the last :data:`RECENT`: an edge per (sender, handler)."""
        at, cached = self._flow
        if time.monotonic() - at < 2.0:  # the page polls; the stream is read at most every 2 s
            return cached
        try:
            reading = await read_records(
                self.config, self.stream, datetime.now(UTC) - RECENT, idle=0.3
            )
        except MessagingError:  # no stream yet (recorder off): no edge known
            reading = None
        answer = flow_of(reading.records if reading else [], RECENT.total_seconds() / 60)
        self._flow = (time.monotonic(), answer)
        return answer

    # -- conversations ------------------------------------------------------

    async def timeline(self, correlation_id: str) -> dict[str, Any]:
        check_correlation_id(correlation_id)
        try:
            reading = await read_records(
                self.config, self.stream, "first", correlation_id=correlation_id, idle=0.5
            )
        except MessagingError as exc:
            raise BadRequestError(f"the recorder's stream {self.stream!r}: {exc}", 404) from None
        timeline = build(reading.records)
        if not timeline.steps:
            raise BadRequestError(
                f"no record of conversation {correlation_id} in {self.stream}", 404
            )
        return {
            "correlation_id": correlation_id,
            "agents": list(timeline.agents),
            "duration_ms": timeline.duration_ms,
            "skipped": reading.skipped,
            "steps": [as_record(step) for step in timeline.steps],
        }


def flow_of(records: Iterable[Record], minutes: float) -> dict[str, Any]:
    """Edges from a publish's agent to the agent that handled the same message id:
    handled deliveries counted, failed ones (outcome ``error``) as errors."""
    records = list(records)
    sender = {r.message_id: r.agent for r in records if r.kind == "publish" and r.message_id}
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record.kind != "handle" or record.message_id not in sender:
            continue
        key = (sender[record.message_id], record.agent)
        edge = edges.setdefault(key, {"from": key[0], "to": key[1], "count": 0, "errors": 0})
        edge["count"] += 1
        edge["errors"] += record.outcome == "error"
    ordered = sorted(edges.values(), key=lambda e: (e["from"], e["to"]))
    for edge in ordered:
        edge["rate_per_minute"] = round(edge["count"] / minutes, 3)
        edge["error_rate"] = round(edge["errors"] / edge["count"], 3)
    agents = sorted({e["from"] for e in ordered} | {e["to"] for e in ordered})
    return {"minutes": minutes, "agents": agents, "edges": ordered}


def agent_of(card: AgentCard) -> dict[str, Any]:
    return {
        "name": card.name,
        "instance": card.instance,
        "queue": card.queue,
        "host": card.host,
        "pid": card.pid,
        "routing_keys": list(card.routing_keys),
        "since": card.since.isoformat(),
    }


def letter_error_type(letter: Delivery) -> str | None:
    value = headers_of(letter).get(ERROR_TYPE)
    return None if value is None else str(plain(value))


def summary(letter: Delivery, queue: str) -> dict[str, Any]:
    props = letter.properties
    headers = headers_of(letter)
    target = original_target(headers, queue)
    return {
        "message_id": plain(props.message_id),
        "correlation_id": plain(props.correlation_id),
        "type": plain(props.message_type),
        "routing_key": target[1] if target else None,
        "why": why(headers),
    }


def selection_of(ids: Iterable[str] | None, error_type: str | None) -> Selection:
    """A selection of ids, or a group's error type: exactly one of them."""
    if ids and error_type:
        raise BadRequestError("give ids or a group's error_type, not both")
    if ids:
        return Selection(ids=frozenset(ids))
    if error_type:
        return Selection(error_types=frozenset({error_type}))
    raise BadRequestError("say which dead letters: ids, or a group's error_type")
