"""The AMQP :class:`~messaging.transport.base.Connection`: one supervised
connection and the managed channels opened on it."""

from __future__ import annotations

from messaging.backoff import RetryPolicy
from messaging.config import BrokerNode, RabbitMQConfig
from messaging.transport.amqp.channels import ManagedChannel
from messaging.transport.amqp.connection import SupervisedConnection
from messaging.transport.amqp.frames import header_frame_size
from messaging.transport.amqp.inspect import BrokerInspector
from messaging.transport.base import Channel, ConnectionHealth, MessageProperties


class ChannelManager:
    """Hands out :class:`ManagedChannel` s on one connection and closes them together."""

    def __init__(self, connection: SupervisedConnection) -> None:
        self.connection = connection
        self._channels: list[ManagedChannel] = []

    @classmethod
    def open(cls, config: RabbitMQConfig, policy: RetryPolicy, purpose: str) -> ChannelManager:
        """A manager on a new connection (which connects on first use)."""
        return cls(SupervisedConnection(config, policy, purpose))

    @property
    def purpose(self) -> str:
        return self.connection.purpose

    async def connect(self) -> None:
        await self.connection.get()

    def health(self) -> ConnectionHealth:
        return self.connection.health()

    @property
    def node(self) -> BrokerNode | None:
        return self.connection.node

    def header_excess(self, properties: MessageProperties, body_size: int) -> int:
        frame_max = self.connection.frame_max
        if frame_max <= 0:
            return 0
        return header_frame_size(properties, body_size) - frame_max

    def channel(
        self,
        purpose: str,
        *,
        confirms: bool = False,
        prefetch: int | None = None,
        probe: bool = False,
    ) -> ManagedChannel:
        """A new managed channel; it opens on first use. ``probe``: for passive declares
        (a NOT_FOUND closing it is an answer, not a problem)."""
        channel = ManagedChannel(
            self.connection, purpose, confirms=confirms, prefetch=prefetch, probe=probe
        )
        self._channels.append(channel)
        return channel

    def inspector(self, purpose: str) -> BrokerInspector:
        return BrokerInspector(self, purpose)

    async def release(self, channel: Channel) -> None:
        if isinstance(channel, ManagedChannel) and channel in self._channels:
            self._channels.remove(channel)
        await channel.close()

    @property
    def channels(self) -> tuple[ManagedChannel, ...]:
        return tuple(self._channels)

    async def close_channels(self) -> None:
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.close()

    async def close(self) -> None:
        """Close every channel, then the connection."""
        await self.close_channels()
        await self.connection.close()
