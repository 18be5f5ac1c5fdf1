"""A message as middlewares see it: :class:`Envelope` coming in, :class:`Outgoing` going out.

Both carry the decoded protobuf message and what travels with it, so a
middleware reads and writes plain values and never a transport's objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message as ProtoMessage


@dataclass(slots=True)
class Envelope:
    """One delivery on its way to the handler.

    ``message`` is the decoded message (the bus's decoding step runs before
    every user middleware). ``properties`` is the very dict the handler
    receives (``routing_key``, ``correlation_id``, ``message_id``, ``headers``,
    ``attempt``, ...): a middleware may add keys to it for the handler.
    ``body`` is the message as it arrived. ``state`` is for middlewares to pass
    values to each other; the bus never reads it.
    """

    message: ProtoMessage
    properties: dict[str, Any]
    agent_name: str
    queue_name: str
    body: bytes = b""
    state: dict[str, Any] = field(default_factory=dict)
    wire: Any = field(default=None, repr=False)
    """The transport's own properties of the delivery (for the bus's decoding step)."""

    @property
    def routing_key(self) -> str:
        return str(self.properties.get("routing_key", ""))

    @property
    def correlation_id(self) -> str | None:
        value = self.properties.get("correlation_id")
        return str(value) if value else None

    @property
    def message_id(self) -> str | None:
        value = self.properties.get("message_id")
        return str(value) if value else None

    @property
    def headers(self) -> dict[str, Any]:
        """The message's headers, as the bus believes them (a sender's ``x-chimera-*`` dropped)."""
        headers: dict[str, Any] = self.properties.get("headers") or {}
        return headers


@dataclass(slots=True)
class Outgoing:
    """One message about to be published (an event, a request or a reply).

    ``headers`` is written into the message: a middleware adds or changes
    entries there. The other fields say what is being sent and where; they
    are read-only to middlewares (change the publish call instead).
    """

    message: ProtoMessage
    exchange: str
    routing_key: str
    headers: dict[str, Any]
    agent_name: str
    message_id: str
    correlation_id: str | None
    reply_to: str | None

    @property
    def is_reply(self) -> bool:
        """True for an answer sent straight to a waiting caller (direct reply-to)."""
        return self.exchange == "" and self.routing_key.startswith("amq.rabbitmq.reply-to")


__all__ = ["Envelope", "Outgoing"]
