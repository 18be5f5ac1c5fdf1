"""The bus's message properties as the AMQP client's, for the wire."""

from __future__ import annotations

from pamqp import commands as spec

from messaging.transport.base import MessageProperties

_PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "message_type",
    "user_id",
    "app_id",
    "cluster_id",
)


def amqp_properties(props: MessageProperties) -> spec.Basic.Properties:
    """``props`` as the client's properties (as they are when they already are)."""
    if isinstance(props, spec.Basic.Properties):
        return props
    headers = props.headers
    if props.cluster_id or props.delivery_mode not in (None, 1, 2):
        # A copy of what another client sent: the constructor would refuse
        # values the broker passes on, and leave the message unsettled.
        odd = spec.Basic.Properties()
        for name in _PROPERTY_NAMES:
            setattr(odd, name, getattr(props, name))
        return odd
    return spec.Basic.Properties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers if headers is None or isinstance(headers, dict) else dict(headers),
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        expiration=props.expiration,
        message_id=props.message_id,
        timestamp=props.timestamp,
        message_type=props.message_type,
        user_id=props.user_id,
        app_id=props.app_id,
        cluster_id=props.cluster_id or "",
    )
