"""Protobuf messages to bytes and back, and type names to classes. Pure: no I/O.

On the wire a body is the message's binary encoding, sent with the AMQP
``content_type`` :data:`CONTENT_TYPE` and ``type`` = :func:`type_name`; a
consumer turns that ``type`` back into a class with :func:`message_class_for`.
The JSON helpers are for tools that print and build messages, not for the wire.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar, overload

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf import message as _pb_message
from google.protobuf.message import Message

from messaging.errors import DecodeError, InvalidMessageError
from messaging.generated import messages_pb2  # noqa: F401  (registers our types by name)

__all__ = [
    "CONTENT_TYPE",
    "deserialize",
    "from_json",
    "message_class_for",
    "serialize",
    "to_dict",
    "type_name",
]

CONTENT_TYPE = "application/x-protobuf"

M = TypeVar("M", bound=Message)


def serialize(message: Message) -> bytes:
    """Encode a protobuf message; InvalidMessageError if it is not one."""
    if not isinstance(message, Message):
        raise InvalidMessageError(_not_a_message(message))
    return message.SerializeToString()


def deserialize(body: bytes, message_class: type[M]) -> M:
    """Decode ``body`` as ``message_class``; DecodeError if it is not one."""
    try:
        return message_class.FromString(body)
    except _pb_message.DecodeError as exc:
        raise DecodeError(
            f"body of {len(body)} bytes is not a valid {message_class.DESCRIPTOR.full_name}: {exc}"
        ) from exc


def type_name(message_or_class: Message | type[Message]) -> str:
    """The protobuf full name, e.g. ``"chimera.v1.QueryRequest"`` (the AMQP ``type``)."""
    try:
        return message_or_class.DESCRIPTOR.full_name
    except AttributeError:
        raise InvalidMessageError(_not_a_message(message_or_class)) from None


@functools.cache
def message_class_for(full_name: str) -> type[Message]:
    """The class registered for a protobuf full name; DecodeError if there is none.

    Any type in the default descriptor pool resolves: ours (imported with this
    module), any other generated module imported before the lookup, and, on a
    first miss, the modules installed packages declare in the
    ``chimera_messaging.schemas`` entry-point group (:mod:`messaging.schemas`).
    """
    descriptor = _find(full_name)
    if descriptor is None and _load_declared_schemas():
        descriptor = _find(full_name)
    if descriptor is None:
        raise DecodeError(
            f"unknown message type {full_name!r}: no protobuf message of that name is "
            f"registered (known: {', '.join(_known_types())}). Load the module that "
            f"defines it (the CLI's --import shop.orders_pb2, an entry point in the "
            f"chimera_messaging.schemas group, or messaging.schemas.load_message_types), "
            f"or check the sender's `type` property."
        )
    return message_factory.GetMessageClass(descriptor)


def _find(full_name: str) -> Any:
    try:
        return descriptor_pool.Default().FindMessageTypeByName(full_name)
    except (KeyError, TypeError):
        return None


@functools.cache
def _load_declared_schemas() -> bool:
    """Import the entry-point-declared schema modules, once; False if there are none."""
    from messaging.schemas import load_message_types

    return bool(load_message_types())


def to_dict(message: Message) -> dict[str, Any]:
    """The message as JSON-ready data, with the field names of the .proto file."""
    if not isinstance(message, Message):
        raise InvalidMessageError(_not_a_message(message))
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@overload
def from_json(full_name_or_class: type[M], json_text: str) -> M: ...
@overload
def from_json(full_name_or_class: str, json_text: str) -> Message: ...
def from_json(full_name_or_class: str | type[Message], json_text: str) -> Message:
    """Build a message from protobuf JSON (as :func:`to_dict` prints, dumped to text).

    ``full_name_or_class`` is a class or a full name like ``"chimera.v1.QueryRequest"``.
    Unknown fields, bad values and malformed JSON raise InvalidMessageError.
    """
    if isinstance(full_name_or_class, str):
        try:
            cls = message_class_for(full_name_or_class)
        except DecodeError as exc:
            raise InvalidMessageError(str(exc)) from None
    else:
        cls = full_name_or_class
    try:
        return json_format.Parse(json_text, cls())
    except json_format.ParseError as exc:
        raise InvalidMessageError(
            f"cannot build {cls.DESCRIPTOR.full_name} from JSON: {exc}. Its fields are: "
            f"{', '.join(f.name for f in cls.DESCRIPTOR.fields)} (snake_case or lowerCamelCase)."
        ) from exc


def _not_a_message(value: object) -> str:
    if isinstance(value, type) and issubclass(value, Message):
        got = f"the class {value.__name__} itself; instantiate it, e.g. {value.__name__}(...)"
    else:
        got = f"{type(value).__name__}; build one from messaging.generated.messages_pb2"
    return (
        f"publish takes a protobuf message, got {got} (e.g. messages_pb2.QueryRequest(query='...'))"
    )


def _known_types() -> list[str]:
    from messaging.schemas import message_types  # the bus's own and every loaded one

    return list(message_types())
