"""Looking at the broker and tidying it: passive declares and deletes.

A passive declare of something missing makes the broker close the channel it
was sent on. The inspector therefore uses a managed channel of its own, which
reopens on the next call, never a channel that consumes or publishes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

import aiormq.exceptions as amqp_errors

from messaging.transport.amqp.channels import ManagedChannel
from messaging.transport.amqp.errors import CONNECTION_LOST, translate
from messaging.transport.base import QueueInfo


class _Channels(Protocol):
    def channel(self, purpose: str, *, probe: bool = ...) -> ManagedChannel: ...

    async def release(self, channel: ManagedChannel) -> None: ...


class BrokerInspector:
    """The AMQP :class:`~messaging.transport.base.Inspector`."""

    def __init__(self, manager: _Channels, purpose: str = "inspect") -> None:
        self._manager = manager
        self._purpose = purpose
        self._channel: ManagedChannel | None = None

    def _probe(self) -> ManagedChannel:
        if self._channel is None:
            self._channel = self._manager.channel(self._purpose, probe=True)
        return self._channel

    async def queue(self, name: str, timeout: float | None = None) -> QueueInfo | None:
        """Depth and consumer count of ``name``, or None when it does not exist."""
        raw = await self._probe().raw(timeout=timeout)
        with _translated():
            try:
                ok = await raw.queue_declare(name, passive=True, timeout=timeout)
            except amqp_errors.ChannelNotFoundEntity:
                return None
        return QueueInfo(name, int(ok.message_count or 0), int(ok.consumer_count or 0))

    async def exchange_exists(self, name: str, timeout: float | None = None) -> bool:
        if name == "":
            return True  # the default exchange always exists and cannot be declared
        raw = await self._probe().raw(timeout=timeout)
        with _translated():
            try:
                await raw.exchange_declare(name, passive=True, timeout=timeout)
            except amqp_errors.ChannelNotFoundEntity:
                return False
        return True

    async def delete_queue(self, name: str) -> int:
        """Delete ``name`` (a no-op when it is missing); returns the messages it held."""
        raw = await self._probe().raw()
        with _translated():
            ok = await raw.queue_delete(name)
        return int(ok.message_count or 0)

    async def delete_exchange(self, name: str) -> None:
        raw = await self._probe().raw()
        with _translated():
            await raw.exchange_delete(name)

    async def purge_queue(self, name: str) -> int:
        raw = await self._probe().raw()
        with _translated():
            ok = await raw.queue_purge(name)
        return int(ok.message_count or 0)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await self._manager.release(channel)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The channel or connection failing under an inspection, as one of our errors."""
    try:
        yield
    except CONNECTION_LOST as exc:
        raise translate(exc, "inspect") from exc
