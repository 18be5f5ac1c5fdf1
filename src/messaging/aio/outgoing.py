"""A message validated and encoded for sending: what ``prepare`` makes and ``send`` takes.

Its own module so that the requester (:mod:`messaging.aio.rpc`) can name it
without importing the publisher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from messaging.aio.envelope import Outgoing
from messaging.transport import Properties


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A validated, encoded message, ready for :meth:`AsyncEventPublisher.send`."""

    body: bytes
    exchange: str
    routing_key: str
    properties: Properties
    mandatory: bool
    timeout: float
    envelope: Outgoing | None = None
    """What ``publish_async`` middlewares see and change; None when there are none."""
    span: Any = None
    """The producer span (:mod:`messaging.ops.tracing`), ended once sent; None when off."""

    @property
    def message_id(self) -> str:
        return str(self.properties.message_id)
