"""What travels through the in-process broker: properties, messages, deliveries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from messaging.transport.base import Properties


def stored_copy(properties: object | None) -> Properties:
    """The broker's own copy of any object with the AMQP property names (headers copied too).

    The broker never keeps a reference into what the publisher may change
    after publishing, as RabbitMQ keeps the bytes it received.
    """
    if properties is None:
        return Properties()
    values = {f.name: getattr(properties, f.name, None) for f in dataclasses.fields(Properties)}
    headers = values["headers"]
    values["headers"] = _deep_copy(headers) if headers else None
    return Properties(**values)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_deep_copy(v) for v in value]
    return value


@dataclass(slots=True)
class Message:
    """A message as the broker stores it: body, properties, where it was published."""

    body: bytes
    properties: Properties
    exchange: str
    routing_keys: list[str]
    """The routing key it was published (or dead-lettered) with: the first one routes it."""

    @property
    def routing_key(self) -> str:
        return self.routing_keys[0]


@dataclass(slots=True)
class Queued:
    """One message in one queue (a message routed to two queues is two of these)."""

    message: Message
    expires_at: float | None
    redelivered: bool = False
    delivery_count: int = 0
    """Returned without an ack this many times (quorum queues put it in x-delivery-count)."""
    position: int = 0
    """Order of arrival, so that requeued messages go back where they were."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed to a consumer or returned by ``basic_get``."""

    body: bytes
    properties: Properties
    exchange: str
    routing_key: str
    delivery_tag: int
    redelivered: bool
    consumer_tag: str | None
    channel: object
    """The broker's ``Channel`` it came on (compared by identity: which generation)."""
    message_count: int | None = None
    """For ``basic_get``: the messages left ready in the queue."""


@dataclass(frozen=True, slots=True)
class Returned:
    """A mandatory message no queue took (RabbitMQ's basic.return, 312 NO_ROUTE)."""

    body: bytes
    properties: Properties
    exchange: str
    routing_key: str
    reply_code: int = 312
    reply_text: str = "NO_ROUTE"


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publisher learns: confirmed (ack) or refused (nack), and whether it was returned.

    RabbitMQ sends basic.return before the basic.ack for a mandatory message no
    queue took, so ``returned`` and ``acked`` can both be true.
    """

    acked: bool
    returned: Returned | None = None
    routed_to: tuple[str, ...] = field(default=())
