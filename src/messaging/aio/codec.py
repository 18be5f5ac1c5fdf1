"""Bodies to messages and back: the codec, and the decoding step of every delivery.

:class:`Codec` is what the bus needs of a wire format; :data:`PROTOBUF` is the
one it speaks. :class:`Decode` is the pipeline's step that turns a delivery's
body into the message its handler is typed for, after the checks a message
from any client must pass (UTF-8 where the bus reads text, the content type,
the ``type`` property).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator
from typing import Protocol

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.envelope import Envelope
from messaging.aio.middleware import Middleware
from messaging.errors import DecodeError, UnknownRoutingKeyError
from messaging.headers import ERROR_MESSAGE, ERROR_REPLY, ERROR_TYPE, FAILED_AGENT
from messaging.serialization import CONTENT_TYPE, deserialize, serialize
from messaging.wiretext import foreign_fields, is_foreign

MessageClassLookup = Callable[[str], "type[ProtoMessage] | None"]
AcceptedTypes = Callable[[type[ProtoMessage]], Collection[str]]
"""For a message class, the ``type`` values taken for it besides its own full name."""


class Codec(Protocol):
    """A wire format: its content type, and bodies to messages and back."""

    @property
    def content_type(self) -> str: ...

    def encode(self, message: ProtoMessage) -> bytes: ...

    def decode(self, body: bytes, message_class: type[ProtoMessage]) -> ProtoMessage: ...


class ProtobufCodec:
    """Protocol Buffers' binary encoding (``application/x-protobuf``)."""

    content_type = CONTENT_TYPE

    def encode(self, message: ProtoMessage) -> bytes:
        return serialize(message)

    def decode(self, body: bytes, message_class: type[ProtoMessage]) -> ProtoMessage:
        return deserialize(body, message_class)


PROTOBUF = ProtobufCodec()


class Decode(Middleware):
    """The step that decodes a delivery's body for its handler (``envelope.message``).

    Everything that fails here is a :class:`~messaging.errors.DecodeError`:
    dead-lettered at once, never retried.
    """

    def __init__(
        self,
        agent_name: str,
        message_class: MessageClassLookup,
        accepted_types: AcceptedTypes | None = None,
        codec: Codec = PROTOBUF,
    ) -> None:
        self.agent_name = agent_name
        self.codec = codec
        self._message_class = message_class
        self._accepted_types = accepted_types
        self._accepted: dict[type[ProtoMessage], frozenset[str]] = {}

    def consume(self, envelope: Envelope) -> Generator[None, None, None]:
        envelope.message = self.decode(envelope)
        yield

    def decode(self, envelope: Envelope) -> ProtoMessage:
        properties = envelope.properties
        routing_key = envelope.routing_key
        if properties["type"] == ERROR_REPLY and properties["exchange"] == "":
            return self._error_reply(envelope)
        foreign = foreign_fields(envelope.wire)
        if is_foreign(routing_key):
            foreign.insert(0, "routing key")
        if foreign:
            raise DecodeError(
                f"{', '.join(foreign)}: not UTF-8 (or a timestamp out of range): AMQP lets a "
                f"sender write any octets there, but this bus takes only UTF-8 text (the "
                f"octets are kept in this dead letter)"
            )
        try:
            cls = self._message_class(routing_key)
        except KeyError:
            cls = None
        if cls is None:
            raise UnknownRoutingKeyError(
                f"{self.agent_name} has no message class for routing key {routing_key!r}"
            )
        content_type = properties["content_type"]
        if content_type and content_type != self.codec.content_type:
            raise DecodeError(
                f"content type {content_type!r} on {routing_key!r}, expected "
                f"{self.codec.content_type!r}: the sender did not publish protobuf"
            )
        self._check_type(properties["type"], cls, routing_key, envelope.body)
        return self.codec.decode(envelope.body, cls)

    def _error_reply(self, envelope: Envelope) -> ProtoMessage:
        """An error reply to a named reply queue (``publish_with_reply``): the handler gets
        an empty message of the key's class and ``properties["error"]`` saying what failed.

        Believed as the bus's own headers are on anything that came through the default
        exchange (README, "Who may write where")."""
        cls = self._message_class(envelope.routing_key)
        if cls is None:
            raise UnknownRoutingKeyError(
                f"{self.agent_name} has no message class for routing key "
                f"{envelope.routing_key!r} (an error reply arrived there)"
            )
        headers = envelope.headers
        envelope.properties["error"] = {
            "type": str(headers.get(ERROR_TYPE, "")),
            "message": str(headers.get(ERROR_MESSAGE, "")),
            "agent": str(headers.get(FAILED_AGENT, "")),
        }
        return cls()

    def _check_type(
        self, sent: str | None, cls: type[ProtoMessage], routing_key: str, body: bytes
    ) -> None:
        """The ``type`` property must name ``cls`` (or a type the subscriber accepts for it).

        Protobuf decodes almost any bytes as almost any class, so the name is
        what tells a ``DataRequest`` from a ``QueryRequest``. Without a
        ``type`` (other clients leave it out) the body is all there is, and an
        empty one says nothing: it is taken only for a class without fields.
        """
        accepted = self._accepted.get(cls)
        if accepted is None:
            accepted = frozenset(
                (cls.DESCRIPTOR.full_name, *self._accepted_types(cls))
                if self._accepted_types is not None
                else (cls.DESCRIPTOR.full_name,)
            )
            self._accepted[cls] = accepted
        if sent:
            if sent not in accepted:
                raise DecodeError(
                    f"type {sent!r} on {routing_key!r}, but {self.agent_name} takes "
                    f"{' or '.join(map(repr, sorted(accepted)))} there: the sender published "
                    f"another message type"
                )
        elif not body and cls.DESCRIPTOR.fields:
            raise DecodeError(
                f"empty body and no type on {routing_key!r}: {cls.DESCRIPTOR.full_name} has "
                f"fields, and a message of another client with neither is not taken as one"
            )
