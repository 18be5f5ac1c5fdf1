"""The transports a pool can be given: RabbitMQ, or the in-process broker.

A pool opens its two connections through one :class:`~messaging.transport.base.Transport`:
the one passed as ``ConnectionPool(..., transport=...)``, else the one its
config's URL names (:func:`transport_for`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from messaging.backoff import RetryPolicy
from messaging.config import RabbitMQConfig
from messaging.errors import ConfigurationError
from messaging.transport.amqp.manager import ChannelManager
from messaging.transport.base import Connection, Transport

if TYPE_CHECKING:
    from messaging.transport.memory.broker import MemoryBroker


class AmqpTransport:
    """RabbitMQ over AMQP 0-9-1, at the nodes the config names (``amqp://``, ``amqps://``)."""

    def open_connection(
        self, config: RabbitMQConfig, policy: RetryPolicy, purpose: str
    ) -> Connection:
        return ChannelManager.open(config, policy, purpose)

    def __repr__(self) -> str:
        return "AmqpTransport()"


class MemoryTransport:
    """The in-process broker: ``broker``, or (None) the one the config's
    ``memory://NAME`` URL names, looked up when a connection opens.

    With a broker given, the config's URL is not used to reach anything: a
    pool of it never opens a socket.
    """

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker

    def open_connection(
        self, config: RabbitMQConfig, policy: RetryPolicy, purpose: str
    ) -> Connection:
        # Imported here: a process that never uses the in-process broker never loads it.
        from messaging.transport.memory.transport import MemoryConnection

        return MemoryConnection(config, policy, purpose, broker=self.broker)

    def __repr__(self) -> str:
        name = "" if self.broker is None else repr(self.broker.name)
        return f"MemoryTransport({name})"


def transport_for(config: RabbitMQConfig) -> Transport:
    """The transport ``config``'s URL names: the in-process broker for ``memory://``,
    else RabbitMQ."""
    if config.memory_broker is not None:
        return MemoryTransport()
    return AmqpTransport()


def checked(transport: object) -> Transport:
    """``transport`` if it is one (has ``open_connection``), else :class:`ConfigurationError`."""
    if not callable(getattr(transport, "open_connection", None)):
        raise ConfigurationError(
            f"transport must be a Transport such as AmqpTransport() or "
            f"MemoryTransport(broker), not {transport!r}"
        )
    return transport  # type: ignore[return-value]


__all__ = ["AmqpTransport", "MemoryTransport", "checked", "transport_for"]
