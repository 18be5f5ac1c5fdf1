"""How busy the agents' queues are: depth, unacked, consumers, rates, DLQ depth.

Three sources, best first, chosen once per run by :func:`open_stats`:

- the management API: everything, rates included (the broker's own
  per-queue publish and deliver rates);
- ``rabbitmqctl list_queues`` on the broker's machine: counts, no rates;
- AMQP passive declares: ready messages and consumers of the queues named on
  the command line; no unacked count, no rates.

Without ``--queue``, the agents' queues are found by the bus's naming: every
queue ``Q`` with a dead-letter queue ``Q.dlq`` beside it (listing queues
needs the management API or rabbitmqctl).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from messaging.cli._admin import (
    Target,
    UnavailableError,
    management_get,
    rabbitmqctl,
    rabbitmqctl_name,
)
from messaging.cli._broker import Broker
from messaging.errors import ConfigurationError
from messaging.topology import dlq_name


@dataclass(frozen=True)
class QueueStats:
    name: str
    ready: int | None
    unacked: int | None
    consumers: int | None
    publish_rate: float | None
    deliver_rate: float | None
    dlq: int | None
    """Depth of ``<name>.dlq``; None when it does not exist."""


@dataclass(frozen=True)
class Snapshot:
    source: str
    missing: str | None
    """What this source cannot tell (shown under the table), or None."""
    queues: list[QueueStats]


class StatsSource(Protocol):
    name: str
    missing: str | None

    async def snapshot(self, queues: list[str] | None) -> list[QueueStats]: ...


def agent_queues(names: set[str]) -> list[str]:
    """The bus's work queues among ``names``: those with a ``.dlq`` beside them."""
    return sorted(n for n in names if dlq_name(n) in names)


class ManagementStats:
    missing: str | None = None

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = f"the management API at {target.management_base}"

    async def snapshot(self, queues: list[str] | None) -> list[QueueStats]:
        entries = await asyncio.to_thread(
            management_get,
            self.target,
            "queues/{vhost}?columns=name,messages_ready,messages_unacknowledged,consumers,"
            "message_stats.publish_details.rate,message_stats.deliver_get_details.rate",
        )
        by_name: dict[str, dict[str, Any]] = {
            str(e.get("name")): e for e in entries if isinstance(e, dict)
        }
        wanted = queues if queues is not None else agent_queues(set(by_name))
        return [_from_management(name, by_name) for name in wanted]


def _from_management(name: str, by_name: dict[str, dict[str, Any]]) -> QueueStats:
    entry = by_name.get(name)
    dlq = by_name.get(dlq_name(name))
    if entry is None:
        return QueueStats(name, None, None, None, None, None, _int(dlq, "messages_ready"))
    stats = entry.get("message_stats") or {}
    return QueueStats(
        name,
        _int(entry, "messages_ready"),
        _int(entry, "messages_unacknowledged"),
        _int(entry, "consumers"),
        float((stats.get("publish_details") or {}).get("rate", 0.0)),
        float((stats.get("deliver_get_details") or {}).get("rate", 0.0)),
        None
        if dlq is None
        else int(dlq.get("messages_ready", 0) or 0)
        + int(dlq.get("messages_unacknowledged", 0) or 0),
    )


class RabbitmqctlStats:
    missing: str | None = (
        "rates need the management API (rabbitmq-plugins enable rabbitmq_management)"
    )

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = rabbitmqctl_name(target)

    async def snapshot(self, queues: list[str] | None) -> list[QueueStats]:
        rows = await asyncio.to_thread(
            rabbitmqctl,
            self.target,
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
            "messages",
        )
        by_name = {str(r.get("name")): r for r in rows}
        wanted = queues if queues is not None else agent_queues(set(by_name))
        out = []
        for name in wanted:
            entry, dlq = by_name.get(name), by_name.get(dlq_name(name))
            out.append(
                QueueStats(
                    name,
                    _int(entry, "messages_ready"),
                    _int(entry, "messages_unacknowledged"),
                    _int(entry, "consumers"),
                    None,
                    None,
                    _int(dlq, "messages"),
                )
            )
        return out


class AmqpStats:
    name = "AMQP (passive declares)"
    missing: str | None = (
        "unacked counts and rates need the management API or rabbitmqctl on the broker's machine"
    )

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def snapshot(self, queues: list[str] | None) -> list[QueueStats]:
        if queues is None:
            raise ConfigurationError(
                "name the queues with --queue: listing them needs the management API "
                "or rabbitmqctl on the broker's machine"
            )
        out = []
        for name in queues:
            info = await self.broker.queue(name)
            dlq = await self.broker.queue(dlq_name(name))
            out.append(
                QueueStats(
                    name,
                    info.messages if info else None,
                    None,
                    info.consumers if info else None,
                    None,
                    None,
                    dlq.messages if dlq else None,
                )
            )
        return out


async def open_stats(
    broker: Broker, target: Target, queues: list[str] | None
) -> tuple[StatsSource, Snapshot]:
    """The best source that answers, with its first snapshot."""
    candidates: list[StatsSource] = [ManagementStats(target), RabbitmqctlStats(target)]
    for source in candidates:
        try:
            return source, await take(source, queues)
        except UnavailableError:
            continue
    fallback: StatsSource = AmqpStats(broker)
    return fallback, await take(fallback, queues)


async def take(source: StatsSource, queues: list[str] | None) -> Snapshot:
    return Snapshot(source.name, source.missing, await source.snapshot(queues))


def _int(entry: dict[str, Any] | None, key: str) -> int | None:
    if entry is None:
        return None
    value = entry.get(key)
    return int(value) if isinstance(value, int | float) else None


__all__ = ["QueueStats", "Snapshot", "StatsSource", "agent_queues", "open_stats", "take"]
