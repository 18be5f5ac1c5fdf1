"""AsyncAPI 3.0 documents for agents, from what they already declare.

For each agent: a ``receive`` operation per entry of its routing-key map (what
arrives, decoded as which class), a ``send`` operation per entry of its
optional :meth:`~messaging.BaseAgent.get_publish_map`. Channels are the routing
keys on the agent's topic exchange (AMQP channel bindings say which exchange,
and that the address is a routing key, which may be a ``*``/``#`` pattern).
Message payloads are JSON Schema made from the protobuf descriptors, in the
shape of protobuf's JSON mapping with the ``.proto`` field names (what
``chimera-bus tail`` prints and ``chimera-bus publish`` reads); on the wire a
body is the binary protobuf encoding, as each message's ``contentType`` and
``x-protobuf-type`` say.

Nothing touches the broker: agents are built on a pool that never connects.

    document = asyncapi_document([DataAgent, QueryAgent], title="Prices")
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from messaging.config import RabbitMQConfig
from messaging.errors import ConfigurationError
from messaging.serialization import CONTENT_TYPE

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
_KEY = re.compile(r"[^a-zA-Z0-9._-]")

# Well-known types have a JSON form of their own (protobuf's JSON mapping).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {"type": "object", "required": ["@type"]},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "uint32"},
    "google.protobuf.Int64Value": {"type": ["string", "integer"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "integer"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": "number", "format": "float"},
    "google.protobuf.DoubleValue": {"type": "number", "format": "double"},
}

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    # 64-bit integers are strings in protobuf's JSON (numbers are accepted on input).
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}


@dataclass(frozen=True)
class AgentShape:
    """What the document needs to know about one agent."""

    name: str
    description: str
    exchange: str
    queue: str
    bindings: tuple[str, ...]
    receives: Mapping[str, type[Message]]
    sends: Mapping[str, type[Message]] = field(default_factory=dict)


def describe(agent: Any) -> AgentShape:
    """The shape of a built agent (a :class:`~messaging.BaseAgent`,
    :class:`~messaging.aio.AsyncBaseAgent`, or anything with the same methods)."""
    receives = dict(agent.get_routing_key_map())
    sends_of = getattr(agent, "get_publish_map", None)
    sends = dict(sends_of()) if sends_of is not None else {}
    for key, cls in [*receives.items(), *sends.items()]:
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise ConfigurationError(
                f"{type(agent).__name__} maps {key!r} to {cls!r}, which is not a protobuf "
                f"message class"
            )
    return AgentShape(
        name=agent.agent_name,
        description=inspect.getdoc(type(agent)) or "",
        exchange=agent.exchange_name,
        queue=agent.queue_name,
        bindings=tuple(agent.routing_keys),
        receives=receives,
        sends=sends,
    )


def import_target(spec: str) -> Any:
    """``"package.module:AgentClass"`` -> the object it names (imported)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"{spec!r}: name an agent as package.module:AgentClass (e.g. shop.desk:OrderDesk)"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigurationError(
            f"cannot import {module_name!r} ({error}): install your package in this "
            f"environment or run from the directory that holds it"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no {attribute!r}") from None
    return target


def build_agent(target: Callable[..., Any], config: RabbitMQConfig | None = None) -> Any:
    """Build an agent class (or a factory taking a pool) on a pool that never connects."""
    from messaging.aio import AsyncConnectionPool
    from messaging.aio.subscriber import AsyncEventSubscriber
    from messaging.connection import ConnectionPool

    config = config or RabbitMQConfig()
    is_async = isinstance(target, type) and issubclass(target, AsyncEventSubscriber)
    pool: Any = AsyncConnectionPool(config) if is_async else ConnectionPool(config)
    try:
        return target(pool)
    except TypeError as error:
        raise ConfigurationError(
            f"cannot build {getattr(target, '__qualname__', target)!r} from a connection pool "
            f"alone ({error}); give a class whose constructor takes just the pool, or a "
            f"function that builds the agent from one"
        ) from error


def asyncapi_document(
    agents: Iterable[Any],
    *,
    title: str = "Chimera agents",
    version: str = "1.0.0",
    description: str | None = None,
    server: RabbitMQConfig | None = None,
) -> dict[str, Any]:
    """An AsyncAPI 3.0.0 document (as JSON-ready data) for ``agents``.

    ``agents`` are agent instances or :class:`AgentShape` values. ``server``
    adds the broker as the document's server (host, port, vhost; never the
    password).
    """
    builder = _Builder()
    shapes = [a if isinstance(a, AgentShape) else describe(a) for a in agents]
    if not shapes:
        raise ConfigurationError("no agents to document: name at least one agent class")
    for shape in shapes:
        builder.add(shape)
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": description
            or "Agents on the Chimera message bus: "
            + ", ".join(shape.name for shape in shapes)
            + ". Bodies are binary protobuf; payload schemas show protobuf's JSON form.",
        },
        "defaultContentType": CONTENT_TYPE,
    }
    if server is not None:
        document["servers"] = {
            "rabbitmq": {
                "host": f"{server.host}:{server.port}",
                "protocol": "amqp",
                "pathname": "/" + server.vhost.lstrip("/") if server.vhost != "/" else "/",
                "description": "RabbitMQ (AMQP 0-9-1)",
            }
        }
    document["channels"] = builder.channels
    document["operations"] = builder.operations
    document["components"] = {"messages": builder.messages, "schemas": builder.schemas}
    return document


class _Builder:
    def __init__(self) -> None:
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}

    def add(self, shape: AgentShape) -> None:
        for action, routes in (("receive", shape.receives), ("send", shape.sends)):
            for routing_key, cls in routes.items():
                channel = self._channel(shape.exchange, routing_key)
                message = self._message(cls)
                self.channels[channel]["messages"][message] = {
                    "$ref": f"#/components/messages/{message}"
                }
                operation: dict[str, Any] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel}"},
                    "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
                    "summary": f"{shape.name} {action}s {cls.DESCRIPTOR.full_name} "
                    f"on {routing_key!r}",
                    "bindings": {"amqp": self._operation_binding(action)},
                }
                if action == "receive":
                    operation["description"] = (
                        f"Consumed from the durable queue {shape.queue!r} (bound to "
                        f"{', '.join(shape.bindings) or 'nothing'}); a message that fails is "
                        f"retried, then dead-lettered to {shape.queue + '.dlq'!r}."
                    )
                    operation["x-chimera-queue"] = shape.queue
                self.operations[_key(f"{shape.name}.{action}.{routing_key}")] = operation

    def _channel(self, exchange: str, routing_key: str) -> str:
        key = _key(routing_key if exchange == "chimera.events" else f"{exchange}.{routing_key}")
        if key not in self.channels:
            self.channels[key] = {
                "address": routing_key,
                "description": f"Routing key {routing_key!r} on the topic exchange "
                f"{exchange!r}"
                + (
                    " (a pattern: * one word, # zero or more)"
                    if "*" in routing_key or "#" in routing_key
                    else ""
                ),
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": exchange,
                            "type": "topic",
                            "durable": True,
                            "autoDelete": False,
                        },
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
            }
        return key

    @staticmethod
    def _operation_binding(action: str) -> dict[str, Any]:
        binding: dict[str, Any] = {"deliveryMode": 2, "bindingVersion": AMQP_BINDING_VERSION}
        if action == "send":
            binding.update(mandatory=True, timestamp=True)
        else:
            binding["ack"] = True
        return binding

    def _message(self, cls: type[Message]) -> str:
        descriptor = cls.DESCRIPTOR
        key = _key(descriptor.full_name)
        if key not in self.messages:
            self.messages[key] = {
                "name": descriptor.name,
                "title": descriptor.full_name,
                "contentType": CONTENT_TYPE,
                "payload": {"$ref": f"#/components/schemas/{self._schema(descriptor)}"},
                "bindings": {
                    "amqp": {
                        "contentEncoding": "binary",
                        "messageType": descriptor.full_name,
                        "bindingVersion": AMQP_BINDING_VERSION,
                    }
                },
                "x-protobuf-type": descriptor.full_name,
            }
        return key

    def _schema(self, descriptor: Any) -> str:  # a Descriptor (upb or pure Python)
        key = _key(descriptor.full_name)
        if key in self.schemas:
            return key
        self.schemas[key] = {}  # placeholder: recursive messages refer to themselves
        properties = {field.name: self._field(field) for field in descriptor.fields}
        self.schemas[key] = {
            "type": "object",
            "title": descriptor.full_name,
            "properties": properties,
            "additionalProperties": False,
        }
        return key

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            full_name = field.message_type.full_name
            if full_name in _WELL_KNOWN:
                return dict(_WELL_KNOWN[full_name])
            return {"$ref": f"#/components/schemas/{self._schema(field.message_type)}"}
        if field.enum_type is not None:
            return _enum(field.enum_type)
        return dict(_SCALARS[field.type])


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    return {
        "type": "string",
        "enum": [value.name for value in enum.values],
        "title": enum.full_name,
    }


def _key(text: str) -> str:
    """A component or channel key AsyncAPI accepts (``^[a-zA-Z0-9.\\-_]+$``)."""
    return _KEY.sub(lambda m: {"*": "star", "#": "hash"}.get(m.group(0), "_"), text)


__all__ = [
    "ASYNCAPI_VERSION",
    "AgentShape",
    "asyncapi_document",
    "build_agent",
    "describe",
    "import_target",
]
