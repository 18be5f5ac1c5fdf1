"""Metadata for outgoing messages, and a builder that stamps it. Pure: no I/O."""

from __future__ import annotations

import time
import uuid
from typing import Any, TypeVar

from google.protobuf.message import Message

from messaging.errors import InvalidMessageError
from messaging.generated import messages_pb2

__all__ = ["MessageBuilder", "correlation_id_of", "create_metadata"]

M = TypeVar("M", bound=Message)


def create_metadata(agent_name: str, correlation_id: str | None = None) -> messages_pb2.Metadata:
    """Fresh metadata: a new message id, the given (or a new) correlation id, now."""
    metadata = messages_pb2.Metadata()
    _stamp(metadata, agent_name, correlation_id)
    return metadata


def correlation_id_of(message: Message) -> str | None:
    """``message.metadata.correlation_id``, or None if it has no metadata or it is empty."""
    if "metadata" not in message.DESCRIPTOR.fields_by_name:
        return None
    correlation_id: str = message.metadata.correlation_id  # type: ignore[attr-defined]
    return correlation_id or None


class MessageBuilder:
    """Builds an agent's messages with their metadata filled in.

    >>> builder = MessageBuilder("query_agent")
    >>> request = builder.build(messages_pb2.DataRequest, symbol="ZEC", days=30)
    >>> reply = builder.reply_to(request, messages_pb2.DataResponse, symbol="ZEC")
    >>> reply.metadata.correlation_id == request.metadata.correlation_id
    True
    """

    __slots__ = ("agent_name",)

    create_metadata = staticmethod(create_metadata)

    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name

    def metadata(self, correlation_id: str | None = None) -> messages_pb2.Metadata:
        """Fresh metadata from this agent."""
        return create_metadata(self.agent_name, correlation_id)

    def build(self, message_class: type[M], correlation_id: str | None = None, **fields: Any) -> M:
        """``message_class(**fields)``, with its ``metadata`` stamped unless given in ``fields``."""
        try:
            message = message_class(**fields)
        except (TypeError, ValueError) as exc:
            raise InvalidMessageError(
                f"cannot build {message_class.DESCRIPTOR.full_name}: {exc}. Its fields are: "
                f"{', '.join(f.name for f in message_class.DESCRIPTOR.fields)}"
            ) from exc
        if "metadata" in message_class.DESCRIPTOR.fields_by_name:
            if "metadata" not in fields:
                _stamp(message.metadata, self.agent_name, correlation_id)  # type: ignore[attr-defined]
        elif correlation_id is not None:
            raise InvalidMessageError(
                f"{message_class.DESCRIPTOR.full_name} has no metadata field to carry "
                f"correlation_id; pass the id in the AMQP properties instead"
            )
        return message

    def reply_to(self, request: Message, response_class: type[M], **fields: Any) -> M:
        """A response in the same conversation: it carries the request's correlation id."""
        return self.build(response_class, correlation_id_of(request), **fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.agent_name!r})"


def _stamp(metadata: messages_pb2.Metadata, agent_name: str, correlation_id: str | None) -> None:
    metadata.message_id = str(uuid.uuid4())
    metadata.correlation_id = correlation_id or str(uuid.uuid4())
    metadata.source_agent = agent_name
    # Timestamp.GetCurrentTime() does the same through datetime, eight times slower.
    now = time.time_ns()
    metadata.timestamp.seconds, metadata.timestamp.nanos = divmod(now, 1_000_000_000)
