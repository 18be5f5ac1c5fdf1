"""AsyncAPI 3.0 documents for agents, from what they already declare.

For each agent: a ``receive`` operation per entry of its routing-key map (what
arrives, decoded as which class), a ``send`` operation per entry of its
optional :meth:`~messaging.BaseAgent.get_publish_map`. Channels are the routing
keys on the agent's topic exchange (AMQP channel bindings say which exchange,
and that the address is a routing key, which may be a ``*``/``#`` pattern).
Message payloads are JSON Schema made from the protobuf descriptors, in the
shape of protobuf's JSON mapping: each field under its lowerCamelCase JSON name
(what ``MessageToDict`` and protobufjs write) or its ``.proto`` name (what
``chimera-bus tail`` prints), not both; 64-bit integers as strings, enums by
name, bytes in base64, well-known types in their own JSON form (a
``Timestamp`` is an RFC 3339 string). On the wire a body is the binary protobuf
encoding, as each message's ``contentType`` and ``x-protobuf-type`` say.

A typed handler (``@agent.handler(key)``) answers: its receive operation has
a ``reply`` on the caller's direct reply-to address, whose messages are the
handler's reply type (its return annotation), or for a streaming handler
each item (``x-conversation-stream: item``) and the end marker
(``chimera.end``), and in both cases the error reply (``chimera.error``:
``x-chimera-error-*`` headers and a JSON body). Its request carries the
conversation headers (deadline, stream window), and the agent's control
address (``chimera.credit``, ``chimera.cancel``) has a channel of its own.

The servers are the broker nodes the configuration names (one per
``RABBITMQ__URL`` entry), with their ports filled in.

Nothing touches the broker: agents are built on a pool that never connects.

    document = asyncapi_document([DataAgent, QueryAgent], title="Prices")
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from messaging.aio.agent import MAX_WINDOW
from messaging.aio.rpc import DIRECT_REPLY_TO
from messaging.config import BrokerNode, RabbitMQConfig
from messaging.errors import ConfigurationError
from messaging.headers import (
    CANCEL_TYPE,
    CONTROL,
    CREDIT,
    CREDIT_TYPE,
    DEADLINE,
    ERROR_MESSAGE,
    ERROR_REPLY,
    ERROR_TYPE,
    FAILED_AGENT,
    STREAM,
    STREAM_END,
    STREAM_ITEM,
)
from messaging.serialization import CONTENT_TYPE

ASYNCAPI_VERSION = "3.0.0"
AMQP_BINDING_VERSION = "0.3.0"
_KEY = re.compile(r"[^a-zA-Z0-9._-]")

_T = FieldDescriptor
_SIGNED = r"^-?[0-9]+$"
_UNSIGNED = r"^[0-9]+$"
_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _integer(bits: int, *, signed: bool) -> dict[str, Any]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    schema: dict[str, Any] = {
        "type": "integer",
        "format": f"int{bits}" if signed else f"uint{bits}",
        "minimum": low,
        "maximum": high,
    }
    if bits == 64:
        # Written as strings (a double cannot hold them all); parsers take numbers too.
        # "pattern" applies to the string form only, the bounds to the number form only.
        schema.update(type=["string", "integer"], pattern=_SIGNED if signed else _UNSIGNED)
    return schema


def _floating(bits: int) -> dict[str, Any]:
    # Non-finite values are written as the strings "NaN", "Infinity", "-Infinity".
    return {
        "type": ["number", "string"],
        "format": "double" if bits == 64 else "float",
        "pattern": "^(NaN|-?Infinity)$",
    }


_SCALARS: dict[int, dict[str, Any]] = {
    _T.TYPE_DOUBLE: _floating(64),
    _T.TYPE_FLOAT: _floating(32),
    _T.TYPE_INT64: _integer(64, signed=True),
    _T.TYPE_SINT64: _integer(64, signed=True),
    _T.TYPE_SFIXED64: _integer(64, signed=True),
    _T.TYPE_UINT64: _integer(64, signed=False),
    _T.TYPE_FIXED64: _integer(64, signed=False),
    _T.TYPE_INT32: _integer(32, signed=True),
    _T.TYPE_SINT32: _integer(32, signed=True),
    _T.TYPE_SFIXED32: _integer(32, signed=True),
    _T.TYPE_UINT32: _integer(32, signed=False),
    _T.TYPE_FIXED32: _integer(32, signed=False),
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    # Standard base64 with padding is written; parsers also take the URL-safe alphabet.
    _T.TYPE_BYTES: {
        "type": "string",
        "contentEncoding": "base64",
        "pattern": r"^[A-Za-z0-9+/_-]*={0,2}$",
    },
}

# Well-known types have a JSON form of their own (protobuf's JSON mapping).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time", "pattern": _RFC3339},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
    },
    # A wrapper is written as the value it wraps.
    **{
        f"google.protobuf.{name}": _SCALARS[kind]
        for name, kind in [
            ("BoolValue", _T.TYPE_BOOL),
            ("StringValue", _T.TYPE_STRING),
            ("BytesValue", _T.TYPE_BYTES),
            ("Int32Value", _T.TYPE_INT32),
            ("UInt32Value", _T.TYPE_UINT32),
            ("Int64Value", _T.TYPE_INT64),
            ("UInt64Value", _T.TYPE_UINT64),
            ("FloatValue", _T.TYPE_FLOAT),
            ("DoubleValue", _T.TYPE_DOUBLE),
        ]
    },
}


@dataclass(frozen=True)
class Answers:
    """How a typed handler answers a request: with what, and whether as a stream."""

    reply: type[Message] | None
    """The reply's class (a stream's item class); None: the handler sends no reply."""
    streams: bool = False


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
    answers: Mapping[str, Answers] = field(default_factory=dict)
    """Routing key pattern of each typed handler -> how it answers."""


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
        answers=_answers(agent),
    )


def _answers(agent: Any) -> dict[str, Answers]:
    """How each of ``agent``'s typed handlers answers (``agent.agent.handlers``)."""
    handlers = getattr(getattr(agent, "agent", None), "handlers", None)
    if not handlers:
        return {}
    reply_types = handlers.reply_types()
    answers: dict[str, Answers] = {}
    for pattern in handlers.routing_key_map():
        # Looked up by its own pattern: an exact key finds its handler; a wildcard one
        # could find an earlier pattern that matches its text, hence the check.
        handler = handlers.lookup(pattern)
        streams = handler is not None and handler.pattern == pattern and handler.streams
        answers[pattern] = Answers(reply_types.get(pattern), streams)
    return answers


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
    adds the broker's nodes as the document's servers (host, port, vhost;
    never the password); the in-process broker (``memory://``) has none.
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
    if server is not None and server.memory_broker is None:
        document["servers"] = _servers(server.nodes())
    document["channels"] = builder.channels
    document["operations"] = builder.operations
    document["components"] = {"messages": builder.messages, "schemas": builder.schemas}
    return document


def _servers(nodes: tuple[BrokerNode, ...]) -> dict[str, Any]:
    """One server per node: ``rabbitmq``, or ``rabbitmq-1``... in the order they are tried."""
    servers: dict[str, Any] = {}
    for index, node in enumerate(nodes, start=1):
        description = "RabbitMQ (AMQP 0-9-1)"
        if len(nodes) > 1:
            description += f", cluster node {index} of {len(nodes)} (tried in this order)"
        servers["rabbitmq" if len(nodes) == 1 else f"rabbitmq-{index}"] = {
            "host": node.address,
            "protocol": "amqps" if node.tls else "amqp",
            "protocolVersion": "0-9-1",
            "pathname": "/" + node.vhost.lstrip("/"),
            "description": description,
        }
    return servers


# -- conversations: what the bus itself sends and reads (messaging.headers) ---------------

_MAX_CREDIT = 2**20
"""The most credit one message may grant (``ControlDesk`` ignores more)."""
_CORRELATION_ID = {
    "location": "$message.header#/correlation_id",
    "description": "The AMQP correlation_id property: the request's.",
}


@dataclass(frozen=True)
class _Schema:
    key: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class _Marker:
    type: str
    name: str
    summary: str
    headers: _Schema
    payload: _Schema | None = None


def _headers(key: str, required: list[str], **properties: dict[str, Any]) -> _Schema:
    """The AMQP headers table of a conversation message (other headers may be there too)."""
    return _Schema(
        f"chimera.conversation.{key}",
        {"type": "object", "required": required, "properties": properties},
    )


_CONTROL_HEADER = {
    "type": "string",
    "description": "The queue of the agent instance answering: where credit and cancels go "
    "(on the default exchange).",
}
_REQUEST_HEADERS = _headers(
    "RequestHeaders",
    [],
    **{
        DEADLINE: {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "description": "When the caller stops waiting, in milliseconds since the epoch. "
            "A request past it is acked unhandled.",
        },
        STREAM: {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_WINDOW,
            "description": "The caller reads a stream: how many replies may be unread at once "
            "(the window). Grant more with chimera.credit as replies are read. Without "
            "it, a streaming handler sends only its first reply.",
        },
    },
)
_ITEM_HEADERS = _headers(
    "StreamItemHeaders",
    [STREAM, CONTROL],
    **{STREAM: {"const": STREAM_ITEM}, CONTROL: _CONTROL_HEADER},
)
_END = _Marker(
    "chimera.end",
    "StreamEnd",
    "The end of a stream: every reply has been sent.",
    _headers(
        "StreamEndHeaders",
        [STREAM, CONTROL],
        **{STREAM: {"const": STREAM_END}, CONTROL: _CONTROL_HEADER},
    ),
)
_ERROR = _Marker(
    ERROR_REPLY,
    "ErrorReply",
    "The agent gave up on the request (its handler raised, or the request could not be "
    "decoded); it also ends a stream.",
    _headers(
        "ErrorHeaders",
        [ERROR_TYPE, ERROR_MESSAGE, FAILED_AGENT],
        **{
            ERROR_TYPE: {"type": "string", "description": "The error's class, module.qualname."},
            ERROR_MESSAGE: {"type": "string"},
            FAILED_AGENT: {"type": "string", "description": "The agent that gave up."},
            CONTROL: _CONTROL_HEADER,
        },
    ),
    _Schema(
        "chimera.conversation.ErrorReply",
        {
            "type": "object",
            "required": ["error_type", "message", "agent", "correlation_id"],
            "properties": {
                "error_type": {"type": "string"},
                "message": {"type": "string"},
                "agent": {"type": "string"},
                "correlation_id": {"type": "string"},
            },
        },
    ),
)
_CREDIT = _Marker(
    CREDIT_TYPE,
    "StreamCredit",
    "The caller read replies of a stream: the agent may send this many more.",
    _headers(
        "CreditHeaders",
        [CREDIT],
        **{CREDIT: {"type": "integer", "minimum": 1, "maximum": _MAX_CREDIT}},
    ),
)
_CANCEL = _Marker(
    CANCEL_TYPE,
    "Cancel",
    "The caller gave up on the request with this correlation_id: the agent stops working on it.",
    _headers("CancelHeaders", []),
)


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
                answers = shape.answers.get(routing_key) if action == "receive" else None
                message = self._message(cls) if answers is None else self._request(cls)
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
                if answers is not None:
                    operation["reply"] = self._reply(channel, answers)
                self.operations[_key(f"{shape.name}.{action}.{routing_key}")] = operation
        if shape.answers:
            self._control(shape)

    # -- conversations (typed handlers) ------------------------------------------------

    def _request(self, cls: type[Message]) -> str:
        """A request to a typed handler: the message, with the conversation headers."""
        key = self._message(cls) + ".request"
        if key not in self.messages:
            self.messages[key] = {
                **self.messages[self._message(cls)],
                "name": f"{cls.DESCRIPTOR.name}Request",
                "summary": f"{cls.DESCRIPTOR.full_name}, as a request to a typed handler",
                "headers": self._conversation_schema(_REQUEST_HEADERS),
            }
        return key

    def _reply(self, channel: str, answers: Answers) -> dict[str, Any]:
        """The operation's ``reply``: what comes back on the caller's reply-to address."""
        replies = self._conversation_channel(
            f"{channel}.reply",
            "The caller's reply-to address: RabbitMQ direct reply-to (consume "
            f"{DIRECT_REPLY_TO!r} with no-ack, publish with that reply_to); the agent "
            "publishes each reply to the default exchange, with the request's correlation_id.",
            {"is": "queue", "queue": {"name": DIRECT_REPLY_TO, "exclusive": True}},
        )
        if answers.streams and answers.reply is not None:
            messages = [self._stream_item(answers.reply), self._marker(_END)]
        elif answers.reply is not None:
            messages = [self._message(answers.reply)]
        else:
            messages = []  # no reply; an error reply still comes
        messages.append(self._marker(_ERROR))
        for message in messages:
            self.channels[replies]["messages"][message] = {
                "$ref": f"#/components/messages/{message}"
            }
        return {
            "address": {
                "location": "$message.header#/reply_to",
                "description": "The request's AMQP reply_to property.",
            },
            "channel": {"$ref": f"#/channels/{replies}"},
            "messages": [{"$ref": f"#/channels/{replies}/messages/{m}"} for m in messages],
        }

    def _stream_item(self, cls: type[Message]) -> str:
        key = self._message(cls) + ".stream-item"
        if key not in self.messages:
            self.messages[key] = {
                **self.messages[self._message(cls)],
                "name": f"{cls.DESCRIPTOR.name}StreamItem",
                "summary": f"One reply of a stream of {cls.DESCRIPTOR.full_name}",
                "headers": self._conversation_schema(_ITEM_HEADERS),
                "correlationId": _CORRELATION_ID,
            }
        return key

    def _control(self, shape: AgentShape) -> None:
        """The channel of the agent's control address, and its receive operation."""
        control = self._conversation_channel(
            f"{shape.name}.control",
            f"{shape.name}'s control address: the queue of one agent instance, named by "
            f"{CONTROL} on its replies, published to on the default exchange. Before the "
            f"first reply a cancel may go to the topic exchange {shape.exchange + '.control'!r} "
            "with the request's routing key instead. A control message is believed only "
            "when its reply_to is the request's own direct reply-to address: publish it on "
            f"the channel that consumes {DIRECT_REPLY_TO!r}, with that reply_to.",
            {"is": "queue", "queue": {"exclusive": True, "autoDelete": True, "durable": False}},
        )
        messages = [self._marker(_CREDIT), self._marker(_CANCEL)]
        for message in messages:
            self.channels[control]["messages"][message] = {
                "$ref": f"#/components/messages/{message}"
            }
        self.operations[_key(f"{shape.name}.receive.control")] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{control}"},
            "messages": [{"$ref": f"#/channels/{control}/messages/{m}"} for m in messages],
            "summary": f"{shape.name} takes stream credit and cancels from its callers",
            "bindings": {"amqp": {"ack": False, "bindingVersion": AMQP_BINDING_VERSION}},
        }

    def _conversation_channel(self, name: str, description: str, binding: dict[str, Any]) -> str:
        """A channel whose address is known only at run time (``address: null``)."""
        key = _key(name)
        if self.channels.get(key, {}).get("address") is not None:
            raise _clash(key)
        self.channels.setdefault(
            key,
            {
                "address": None,
                "description": description,
                "messages": {},
                "bindings": {"amqp": {**binding, "bindingVersion": AMQP_BINDING_VERSION}},
            },
        )
        return key

    def _marker(self, marker: _Marker) -> str:
        """A message the bus itself defines (error reply, end of stream, control)."""
        if marker.type not in self.messages:
            message: dict[str, Any] = {
                "name": marker.name,
                "title": marker.type,
                "summary": marker.summary,
                "headers": self._conversation_schema(marker.headers),
                "correlationId": _CORRELATION_ID,
                "bindings": {
                    "amqp": {"messageType": marker.type, "bindingVersion": AMQP_BINDING_VERSION}
                },
            }
            if marker.payload is None:
                message["description"] = "No body."
            else:
                message["contentType"] = "application/json"
                message["payload"] = self._conversation_schema(marker.payload)
            self.messages[marker.type] = message
        return marker.type

    def _conversation_schema(self, schema: _Schema) -> dict[str, Any]:
        self.schemas.setdefault(schema.key, schema.schema)
        return {"$ref": f"#/components/schemas/{schema.key}"}

    def _channel(self, exchange: str, routing_key: str) -> str:
        key = _key(routing_key if exchange == "chimera.events" else f"{exchange}.{routing_key}")
        if key in self.channels and self.channels[key]["address"] is None:
            raise _clash(key)
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
        properties: dict[str, Any] = {}
        for proto_field in descriptor.fields:
            for name in _names(proto_field):
                properties[name] = self._field(proto_field)
        schema: dict[str, Any] = {
            "type": "object",
            "title": descriptor.full_name,
            "properties": properties,
            "additionalProperties": False,
        }
        exclusions = _exclusions(descriptor)
        if exclusions:
            schema["dependencies"] = exclusions
        self.schemas[key] = schema
        return key

    def _field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = (field.message_type.fields_by_name[name] for name in ("key", "value"))
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self._single(value)}
            if key.type != _T.TYPE_STRING:
                schema["propertyNames"] = _key_names(key.type)
            return schema
        single = self._single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            full_name = field.message_type.full_name
            if full_name in _WELL_KNOWN:
                return copy.deepcopy(_WELL_KNOWN[full_name])
            return {"$ref": f"#/components/schemas/{self._schema(field.message_type)}"}
        if field.enum_type is not None:
            return _enum(field.enum_type)
        return copy.deepcopy(_SCALARS[field.type])


def _key_names(kind: int) -> dict[str, Any]:
    """JSON object keys are strings: a map's bool or integer keys are written as text."""
    if kind == _T.TYPE_BOOL:
        return {"enum": ["true", "false"]}
    return {"pattern": _SIGNED if _SCALARS[kind]["minimum"] < 0 else _UNSIGNED}


def _names(field: FieldDescriptor) -> list[str]:
    """The names a JSON parser takes for ``field``: its ``.proto`` name and its JSON name."""
    return [field.name] if field.json_name == field.name else [field.name, field.json_name]


def _exclusions(descriptor: Any) -> dict[str, Any]:
    """Names that may not appear together: a field's two spellings (which one wins
    depends on the parser), and the members of a oneof. Exclusion is symmetric, so
    each name excludes only the names after it."""
    groups = [
        (name, (proto_field.containing_oneof or proto_field).full_name)
        for proto_field in descriptor.fields
        for name in _names(proto_field)
    ]
    exclusions: dict[str, Any] = {}
    for index, (name, group) in enumerate(groups):
        later = [other for other, its in groups[index + 1 :] if its == group]
        if len(later) == 1:
            exclusions[name] = {"not": {"required": later}}
        elif later:
            exclusions[name] = {"not": {"anyOf": [{"required": [other]} for other in later]}}
    return exclusions


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    if enum.full_name == "google.protobuf.NullValue":
        return {"type": "null"}
    # Written by name; a number the schema does not know (a newer sender's) as the
    # number. Parsers take numbers for any value.
    return {
        "title": enum.full_name,
        "anyOf": [
            {"type": "string", "enum": [value.name for value in enum.values]},
            _integer(32, signed=True),
        ],
    }


def _clash(key: str) -> ConfigurationError:
    return ConfigurationError(
        f"channel {key!r} would be both a routing key and a reply or control address; "
        f"rename the routing key"
    )


def _key(text: str) -> str:
    """A component or channel key AsyncAPI accepts (``^[a-zA-Z0-9.\\-_]+$``)."""
    return _KEY.sub(lambda m: {"*": "star", "#": "hash"}.get(m.group(0), "_"), text)


__all__ = [
    "ASYNCAPI_VERSION",
    "AgentShape",
    "Answers",
    "asyncapi_document",
    "build_agent",
    "describe",
    "import_target",
]
