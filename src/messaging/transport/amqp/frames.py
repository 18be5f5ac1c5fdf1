"""How big a message's content header is on the wire, against the broker's ``frame_max``.

AMQP cannot split a content header (properties and headers) across frames:
one that does not fit in the ``frame_max`` negotiated at connect makes the
broker close the whole connection with FRAME_ERROR. Sending it again would
only close the next connection the same way, so whoever adds headers to a
message (the bus, to a dead-letter copy) checks here first.
"""

from __future__ import annotations

from messaging.transport.amqp.properties import content_header
from messaging.transport.base import MessageProperties

DEFAULT_FRAME_MAX = 131072
"""RabbitMQ's default ``frame_max``: what is assumed before a connection has negotiated."""
FRAME_OVERHEAD = 8
"""Frame type (1), channel (2), payload size (4) and the end octet (1)."""


def header_frame_size(properties: MessageProperties, body_size: int) -> int:
    """Octets of the content header frame that would carry ``properties``."""
    return len(content_header(properties, body_size)) + FRAME_OVERHEAD


def fits(properties: MessageProperties, body_size: int, frame_max: int) -> bool:
    """True when the content header fits in one frame (``frame_max`` 0: no limit)."""
    return frame_max <= 0 or header_frame_size(properties, body_size) <= frame_max
