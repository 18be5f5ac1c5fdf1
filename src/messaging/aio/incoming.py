"""What the bus believes about one delivery, and the properties dict handlers receive.

A sender may write any header; the bus's own ``x-chimera-*`` headers are
believed only on a message that came through the bus's own retry or
redelivery-count path (DESIGN.md, "Trust of the bus's own headers").
"""

from __future__ import annotations

from typing import Any

from messaging.headers import ATTEMPTS, ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY, without_bus_headers
from messaging.transport import Delivery


def came_through_the_bus(delivery: Delivery) -> bool:
    """Delivered to the work queue by name: the bus's own retry or redelivery-count path.

    Both reach the queue through the default exchange (a delay queue
    dead-letters there; a recounted copy is published there). What senders
    publish arrives through the events exchange. Who else may publish to the
    default exchange is a matter of vhost permissions (README, "Who may write
    where").
    """
    return not delivery.exchange


def headers_of(delivery: Delivery) -> dict[str, Any]:
    """The message's headers as the bus believes them: a sender's ``x-chimera-*`` dropped."""
    headers = delivery.properties.headers
    if not headers:
        return {}
    if came_through_the_bus(delivery):
        return dict(headers)
    return without_bus_headers(headers)


def routing_key_of(delivery: Delivery) -> str:
    """The key the message was published with, also after a retry through a delay queue."""
    if came_through_the_bus(delivery):
        headers = delivery.properties.headers
        original = headers.get(ORIGINAL_ROUTING_KEY) if headers else None
        if original:
            return str(original)
    return delivery.routing_key


def delivery_properties(delivery: Delivery) -> dict[str, Any]:
    """The properties dict handlers receive."""
    props = delivery.properties
    headers = headers_of(delivery)
    return {
        "correlation_id": props.correlation_id,
        "reply_to": props.reply_to,
        "message_id": props.message_id,
        "routing_key": routing_key_of(delivery),
        "exchange": headers.get(ORIGINAL_EXCHANGE) or delivery.exchange,
        "headers": headers,
        "attempt": _int(headers.get(ATTEMPTS)) + 1,
        "redelivered": delivery.redelivered,
        "timestamp": props.timestamp,
        "type": props.message_type,
        "content_type": props.content_type,
        "app_id": props.app_id,
        "delivery_tag": delivery.delivery_tag,
    }


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
