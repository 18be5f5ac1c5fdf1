"""The in-process broker's refusals as the bus's own errors (the one place for it)."""

from __future__ import annotations

import re
from typing import Any

from messaging.errors import (
    MessagingError,
    PublishError,
    PublishNackedError,
    TopologyError,
    TopologyMismatchError,
    UnroutableMessageError,
)
from messaging.transport.memory.errors import BrokerError, NotFoundError, PreconditionFailedError
from messaging.transport.memory.model import PublishResult

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<entity>queue|exchange) '(?P<name>[^']+)'"
    r".*?received (?P<want>.+?) but current is (?P<have>.+?)$"
)


def translate_topology_error(exc: BrokerError) -> MessagingError:
    """A refused declaration, as a :class:`TopologyError` that says what differs."""
    if isinstance(exc, PreconditionFailedError):
        match = _INEQUIVALENT.search(exc.reply_text)
        if match:
            return TopologyMismatchError(
                match["entity"],
                match["name"],
                {match["arg"]: (_unquote(match["want"]), _unquote(match["have"]))},
                exc.reply_text,
            )
    return TopologyError(f"the broker refused the declaration: {exc.reply_text}")


def translate_publish_error(exc: BrokerError, exchange: str, routing_key: str) -> MessagingError:
    if isinstance(exc, NotFoundError):
        return PublishError(
            f"exchange {exchange!r} does not exist: {exc.reply_text}. Create it by starting a "
            f"subscriber or publisher on it first."
        )
    return PublishError(f"publish to {exchange!r}/{routing_key!r} failed: {exc.reply_text}")


def translate_publish_result(
    result: PublishResult, exchange: str, routing_key: str, *, mandatory: bool
) -> None:
    """Raise what a confirming publisher hears when the broker returned or nacked it."""
    if mandatory and result.returned is not None:
        raise UnroutableMessageError(
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}; "
            f"the broker returned the message. Start the subscriber first (it declares and "
            f"binds its queue), or check the routing key."
        )
    if not result.acked:
        raise PublishNackedError(
            f"the broker nacked the message to {exchange!r}/{routing_key!r}: it was not "
            f"stored; publish it again"
        )


def _unquote(value: str) -> Any:
    value = value.strip()
    if value.startswith("the value '") and "' of type" in value:
        value = value[len("the value '") : value.index("' of type")]
        return int(value) if value.lstrip("-").isdigit() else value
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value
