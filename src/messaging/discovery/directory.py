"""Listening to announcements: the table of running agents.

A :class:`Directory` binds a temporary queue (exclusive, auto-deleted: the
broker removes it when the listener goes) to ``agent.*`` on the discovery
exchange, and keeps the latest card of every instance it hears. An instance
leaves the table when it withdraws, or when ``3 x`` its own interval passed
on this listener's clock without a heartbeat (it crashed, or lost the broker).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from messaging.aio.pool import AsyncConnectionPool
from messaging.discovery.announcer import discovery_topology
from messaging.discovery.card import LISTEN_PATTERN, AgentCard
from messaging.transport import Channel, Delivery

log = logging.getLogger("messaging.discovery")


@dataclass(frozen=True)
class Heard:
    card: AgentCard
    at: float
    """When the card arrived, on this listener's monotonic clock."""

    def expired(self, now: float) -> bool:
        return now - self.at > self.card.expires_after


class Directory:
    """The running agents, as heard on the discovery exchange.

    Create it inside the event loop that runs ``pool``; :meth:`start` binds the
    queue, :meth:`agents` is the table now, :meth:`close` unbinds.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        exchange: str = "chimera.discovery",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.exchange = exchange
        self.malformed = 0
        self._clock = clock
        self._heard: dict[str, Heard] = {}
        self._channel: Channel | None = None
        self._changed = asyncio.Event()

    async def start(self) -> Directory:
        channel = self.pool.consuming.channel("discovery:listen")
        self._channel = channel
        # Declared (not just checked): a listener may well start before any agent.
        await channel.declare(discovery_topology(self.exchange))
        queue = await channel.bind_temporary_queue(self.exchange, LISTEN_PATTERN)
        await channel.consume(queue, self._on_delivery, exclusive=True, no_ack=True, inline=True)
        return self

    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            card = AgentCard.from_json(bytes(delivery.body))
        except ValueError as exc:
            self.malformed += 1
            log.debug("discovery: ignored a message that is not an announcement: %s", exc)
            return
        if card.event == "withdraw":
            self._heard.pop(card.instance, None)
        else:
            self._heard[card.instance] = Heard(card, self._clock())
        self._changed.set()

    def agents(self) -> list[AgentCard]:
        """Every instance heard and not expired or withdrawn, by name then host and pid."""
        now = self._clock()
        for instance, heard in list(self._heard.items()):
            if heard.expired(now):
                del self._heard[instance]
        cards = [heard.card for heard in self._heard.values()]
        return sorted(cards, key=lambda c: (c.name, c.host, c.pid, c.instance))

    async def changed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for an announcement or withdrawal; True if one came."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not self.pool.closed:
            await self.pool.consuming.release(channel)

    async def __aenter__(self) -> Directory:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def listen(
    pool: AsyncConnectionPool, wait: float, exchange: str = "chimera.discovery"
) -> list[AgentCard]:
    """The agents heard within ``wait`` seconds (a late listener needs one interval)."""
    async with Directory(pool, exchange) as directory:
        await asyncio.sleep(wait)
        return directory.agents()


__all__ = ["Directory", "Heard", "listen"]
