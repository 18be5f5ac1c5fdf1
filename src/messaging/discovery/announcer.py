"""The heartbeat of one running subscriber or agent on the discovery exchange.

It runs beside the message path, never in it: a task of its own on the pool's
event loop, a channel of its own (no confirms, not mandatory), and no error of
its ever reaches the agent. A failed announcement is logged once per streak of
failures (then at DEBUG until one succeeds again) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from messaging.aio.pool import AsyncConnectionPool
from messaging.discovery.card import (
    ANNOUNCE_KEY,
    CONTENT_TYPE,
    SCHEMA,
    WITHDRAW_KEY,
    AgentCard,
    card_for,
)
from messaging.topology import ExchangeSpec, Topology
from messaging.transport import Channel, Properties

log = logging.getLogger("messaging.discovery")

FAILURES = Counter(
    "chimera_discovery_failures",
    "Discovery announcements that could not be sent (the agent carries on).",
    ["agent"],
)
SEND_TIMEOUT = 5.0
"""Longest one heartbeat may wait for the connection."""
WITHDRAW_TIMEOUT = 1.0
"""Longest the withdrawal may hold up a stop; a listener forgets an unsent one by expiry."""


def discovery_topology(exchange: str) -> Topology:
    """The discovery exchange: topic, durable, shared by every agent of the vhost."""
    return Topology(exchanges=(ExchangeSpec(name=exchange, type="topic"),))


class Announcer:
    """Announces ``subscriber`` every ``interval`` seconds until :meth:`withdraw`."""

    def __init__(
        self, pool: AsyncConnectionPool, subscriber: Any, *, exchange: str, interval: float
    ) -> None:
        self.pool = pool
        self.subscriber = subscriber
        self.exchange = exchange
        self.interval = interval
        self.card: AgentCard | None = None
        self.sent = 0
        self._channel: Channel | None = None
        self._declared = False
        self._failing = False
        self._failures = FAILURES.labels(subscriber.agent_name)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Start the heartbeat (on the running loop); returns its task at once."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._beat(), name=f"discovery:{self.subscriber.agent_name}"
            )
        return self._task

    async def withdraw(self) -> None:
        """Stop the heartbeat and say goodbye (if we ever said hello); never raises."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.card is not None and self.sent:
            await self._send(self.card.stamped("withdraw"), WITHDRAW_KEY, WITHDRAW_TIMEOUT)
        channel, self._channel = self._channel, None
        if channel is not None and not self.pool.closed:
            with contextlib.suppress(Exception):
                await self.pool.publishing.release(channel)

    async def _beat(self) -> None:
        # The card needs a scan of the installed distributions: off the loop, once.
        try:
            self.card = await asyncio.to_thread(card_for, self.subscriber, self.interval)
        except Exception:
            log.exception("discovery: cannot describe %s; not announcing it", self._name)
            return
        while not self.pool.closed:
            await self._send(self.card.stamped(), ANNOUNCE_KEY)
            await asyncio.sleep(self.interval)

    @property
    def _name(self) -> str:
        return str(self.subscriber.agent_name)

    async def _send(self, card: AgentCard, routing_key: str, timeout: float = SEND_TIMEOUT) -> None:
        if self.pool.closed:
            return
        try:
            channel = await asyncio.wait_for(self._ready_channel(), timeout)
            await channel.publish(
                card.to_json(),
                self.exchange,
                routing_key,
                Properties(
                    content_type=CONTENT_TYPE,
                    delivery_mode=1,
                    message_type=f"{SCHEMA}.{card.event}",
                    app_id=card.name,
                    timestamp=datetime.now(UTC),
                    expiration=str(int(card.expires_after * 1000)),
                ),
                mandatory=False,
                timeout=timeout,
            )
        except Exception as exc:  # discovery must never fail the agent
            self._failures.inc()
            if not self._failing:
                log.warning(
                    "discovery: could not announce %s on %s (the agent carries on; "
                    "retrying every %gs): %s",
                    self._name,
                    self.exchange,
                    self.interval,
                    exc,
                )
            else:
                log.debug("discovery: announcing %s failed again: %s", self._name, exc)
            self._failing = True
            return
        self.sent += 1
        if self._failing:
            log.info("discovery: announcing %s again", self._name)
            self._failing = False

    async def _ready_channel(self) -> Channel:
        if self._channel is None:
            self._channel = self.pool.publishing.channel(f"discovery:{self._name}")
        if not self._declared:
            # Declared on the channel, so that it is declared again after a reconnect.
            await self._channel.declare(discovery_topology(self.exchange))
            self._declared = True
        return self._channel


__all__ = ["FAILURES", "Announcer", "discovery_topology"]
