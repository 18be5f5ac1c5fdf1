"""The in-process broker's refusals, with RabbitMQ's reply codes and texts.

A refused operation closes its channel, as on RabbitMQ; the text is the one
RabbitMQ sends (``NOT_FOUND - no queue 'x' in vhost '/'``), so the same
translation and the same tests apply to both transports.
"""

from __future__ import annotations


class BrokerError(Exception):
    """An AMQP error the broker answered with: ``reply_code`` and ``reply_text``."""

    reply_code = 0
    name = ""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{self.name} - {detail}")

    @property
    def reply_text(self) -> str:
        return str(self)


class ChannelError(BrokerError):
    """A soft error: the broker closed the channel the operation was sent on."""


class AccessRefusedError(ChannelError):
    reply_code = 403
    name = "ACCESS_REFUSED"


class NotFoundError(ChannelError):
    reply_code = 404
    name = "NOT_FOUND"


class ResourceLockedError(ChannelError):
    reply_code = 405
    name = "RESOURCE_LOCKED"


class PreconditionFailedError(ChannelError):
    reply_code = 406
    name = "PRECONDITION_FAILED"


class NotImplementedFeatureError(BrokerError):
    """Something RabbitMQ does that this broker does not; refused rather than faked."""

    reply_code = 540
    name = "NOT_IMPLEMENTED"


class CommandInvalidError(BrokerError):
    reply_code = 503
    name = "COMMAND_INVALID"


class ChannelClosedError(ChannelError):
    """The channel is closed (by an earlier error, or by its owner)."""

    reply_code = 504
    name = "CHANNEL_ERROR"


class ConnectionClosedError(BrokerError):
    """The connection is closed: every channel on it is gone."""

    reply_code = 320
    name = "CONNECTION_FORCED"
