"""Typed handlers: a function per routing key, typed by its request, whose return is the reply.

::

    @agent.handler("weather.request")
    def forecast(request: WeatherRequest, ctx: RequestContext) -> WeatherReply:
        return WeatherReply(city=request.city, celsius=21.5)

The parameter annotated with a protobuf class is the request (it is decoded
as that class); one annotated :class:`RequestContext` gets the context
(metadata, deadline, cancellation); the return annotation is the reply's
type, sent back to the caller (``reply_to``). A generator (``Iterator[X]``)
or async generator (``AsyncIterator[X]``) streams its replies.
"""

from __future__ import annotations

import inspect
import threading
import time
import typing
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging.errors import ConfigurationError
from messaging.routing import RoutingTable, validate_binding_pattern


@dataclass
class RequestContext:
    """What a typed handler may know about the request in hand besides the message."""

    agent_name: str
    routing_key: str
    properties: dict[str, Any]
    metadata: Any
    """The request's ``metadata`` field (``messages_pb2.Metadata``), or None."""
    deadline: float | None = None
    """When the caller stops waiting, in seconds since the epoch (None: no deadline)."""
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def correlation_id(self) -> str | None:
        value = self.properties.get("correlation_id")
        return str(value) if value else None

    def time_left(self) -> float | None:
        """Seconds until the caller's deadline (0 once past it); None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.time())

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up on this request (timed out, cancelled, stopped
        reading a stream): a sync handler checks it and returns early."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()


@dataclass(frozen=True)
class TypedHandler:
    """A handler function and what its annotations say."""

    pattern: str
    function: Callable[..., Any]
    request_type: type[ProtoMessage]
    reply_type: type[ProtoMessage] | None
    message_parameter: str
    context_parameter: str | None
    streams: bool
    is_async: bool
    reply_key: str | None

    @property
    def name(self) -> str:
        return getattr(self.function, "__qualname__", repr(self.function))

    def call(self, message: ProtoMessage, context: RequestContext) -> Any:
        """Call the function: its result, its coroutine, or its (async) generator."""
        arguments: dict[str, Any] = {self.message_parameter: message}
        if self.context_parameter is not None:
            arguments[self.context_parameter] = context
        return self.function(**arguments)


def typed_handler(
    function: Callable[..., Any], pattern: str, reply_key: str | None = None
) -> TypedHandler:
    """Read ``function``'s annotations; a :class:`ConfigurationError` saying what is missing."""
    validate_binding_pattern(pattern)
    where = getattr(function, "__qualname__", repr(function))
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:
        raise ConfigurationError(
            f"the annotations of handler {where} cannot be resolved ({exc}); annotate with "
            f"classes importable at module level"
        ) from exc
    message_parameter = context_parameter = None
    request_type: type[ProtoMessage] | None = None
    for name in inspect.signature(function).parameters:
        hint = hints.get(name)
        if isinstance(hint, type) and issubclass(hint, ProtoMessage):
            if request_type is not None:
                raise ConfigurationError(f"handler {where} takes two messages; it takes one")
            message_parameter, request_type = name, hint
        elif hint is RequestContext:
            context_parameter = name
        else:
            raise ConfigurationError(
                f"handler {where}: parameter {name!r} is neither the request (annotate it with "
                f"its protobuf class) nor the context (annotate it RequestContext)"
            )
    if request_type is None or message_parameter is None:
        raise ConfigurationError(
            f"handler {where} has no parameter annotated with a protobuf message class: "
            f"annotate the request, e.g. (request: WeatherRequest)"
        )
    is_async = inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
    streams = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
    return TypedHandler(
        pattern=pattern,
        function=function,
        request_type=request_type,
        reply_type=_reply_type(hints.get("return"), streams, where),
        message_parameter=message_parameter,
        context_parameter=context_parameter,
        streams=streams,
        is_async=is_async,
        reply_key=reply_key,
    )


def _reply_type(hint: Any, streams: bool, where: str) -> type[ProtoMessage] | None:
    if streams:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        iterable = origin in (
            Iterator,
            AsyncIterator,
            typing.Generator.__origin__,  # type: ignore[attr-defined]
            typing.AsyncGenerator.__origin__,  # type: ignore[attr-defined]
        )
        if iterable and args and isinstance(args[0], type) and issubclass(args[0], ProtoMessage):
            return args[0]
        raise ConfigurationError(
            f"streaming handler {where} must say what it yields, e.g. -> Iterator[Forecast] "
            f"(or AsyncIterator[Forecast])"
        )
    if hint is None or hint is type(None):
        return None
    if isinstance(hint, type) and issubclass(hint, ProtoMessage):
        return hint
    raise ConfigurationError(
        f"handler {where} returns {hint!r}: return a protobuf message (the reply) or None"
    )


class Handlers:
    """An agent's typed handlers, looked up by routing key."""

    def __init__(self) -> None:
        self._handlers: dict[str, TypedHandler] = {}
        self._table: RoutingTable[TypedHandler] | None = None

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def add(self, handler: TypedHandler) -> None:
        if handler.pattern in self._handlers:
            raise ConfigurationError(
                f"routing key {handler.pattern!r} has a handler already "
                f"({self._handlers[handler.pattern].name})"
            )
        self._handlers[handler.pattern] = handler
        self._table = None

    def lookup(self, routing_key: str) -> TypedHandler | None:
        if self._table is None:
            self._table = RoutingTable(dict(self._handlers))
        return self._table.lookup(routing_key)

    def routing_key_map(self) -> Mapping[str, type[ProtoMessage]]:
        return {pattern: h.request_type for pattern, h in self._handlers.items()}

    def publish_map(self) -> Mapping[str, type[ProtoMessage]]:
        return {
            h.reply_key: h.reply_type
            for h in self._handlers.values()
            if h.reply_key and h.reply_type is not None
        }

    def reply_types(self) -> Mapping[str, type[ProtoMessage]]:
        """Routing key pattern -> the type its handler replies with."""
        return {p: h.reply_type for p, h in self._handlers.items() if h.reply_type is not None}
