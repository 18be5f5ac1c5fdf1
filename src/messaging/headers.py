"""Headers the bus sets on messages it retries or dead-letters.

A dead letter carries everything a person reading the DLQ, or a tool
replaying it, needs: why it failed, where, and where it was going.

They are the bus's own: believed only on a message that came through the
bus's own retry path (delivered to the work queue by name, through the
default exchange) or read back from its DLQ. On a message a sender published
to the events exchange they are dropped: a sender cannot choose the routing
key a handler sees, its attempt count, or where ``dlq replay`` sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "x-chimera-"

ERROR_TYPE = "x-chimera-error-type"
ERROR_MESSAGE = "x-chimera-error-message"
FAILED_AGENT = "x-chimera-failed-agent"
ORIGINAL_EXCHANGE = "x-chimera-original-exchange"
ORIGINAL_ROUTING_KEY = "x-chimera-original-routing-key"
ATTEMPTS = "x-chimera-attempts"
"""How many times handling has failed so far."""
REDELIVERIES = "x-chimera-redeliveries"
"""How many times the broker redelivered it unacked (its consumer died holding it)."""

MAX_ERROR_MESSAGE = 1000

ERROR_REPLY = "chimera.error"
"""The AMQP ``type`` of an error reply: the agent answering a request gave up on it.

Sent to a caller waiting on direct reply-to, with the request's
``correlation_id``, the headers :data:`ERROR_TYPE`, :data:`ERROR_MESSAGE` and
:data:`FAILED_AGENT`, and the same as a JSON object in the body
(``content_type`` ``application/json``: ``error_type``, ``message``,
``agent``, ``correlation_id``), so that a client in any language can read it.
"""


def without_bus_headers(headers: Mapping[Any, Any]) -> dict[Any, Any]:
    """``headers`` minus every ``x-chimera-*`` one (a sender's, not to be believed)."""
    return {
        key: value
        for key, value in headers.items()
        if not (isinstance(key, str) and key.startswith(PREFIX))
    }


# -- conversations (requests, streams, cancellation) -----------------------------------
#
# Set by callers and responders on requests, replies and control messages, so not
# under PREFIX (which the bus strips from what senders publish). Who may believe
# them is said at each: a reply is believed by the caller that made the request
# (it arrives on that caller's own direct reply-to address); a control message by
# the responder only when its ``reply_to`` is the very address the request came from.

DEADLINE = "x-conversation-deadline"
"""On a request: when its caller stops waiting, in milliseconds since the epoch (an int).

A responder does not start handling a request past its deadline (it acks it and
counts it as expired), and a request made while handling it inherits the time left.
"""

STREAM = "x-conversation-stream"
"""On a request: the caller reads a stream, and this many replies may be unread at once
(the window, an int). On a reply of a stream: ``"item"``, or ``"end"`` on the last one
(no body; an error ends a stream as an :data:`ERROR_REPLY`)."""

CONTROL = "x-conversation-control"
"""On a reply: the queue (on the default exchange) that reaches the responder's instance,
for :data:`CANCEL` and :data:`CREDIT` messages."""

CREDIT = "x-conversation-credit"
"""On a :data:`CREDIT_TYPE` control message: how many more replies the responder may send."""

CANCEL_TYPE = "chimera.cancel"
"""The AMQP ``type`` of a control message saying the caller gave up on the request with
its ``correlation_id``."""

CREDIT_TYPE = "chimera.credit"
"""The AMQP ``type`` of a control message granting a stream :data:`CREDIT`."""

END_TYPE = "chimera.end"
"""The AMQP ``type`` of a stream's end marker (no body)."""

STREAM_ITEM = "item"
STREAM_END = "end"
