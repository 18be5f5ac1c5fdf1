"""Agents: a subscriber and a publisher in one, with correlation tracking.

:class:`AgentCore` is what the sync :class:`messaging.BaseAgent` and the
async :class:`AsyncBaseAgent` share: the routing-key map, the workflow
context store, the current delivery, and request/response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, ClassVar, TypeVar, Unpack, cast

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.consumer import Consumer
from messaging.aio.control import ControlDesk, Conversation
from messaging.aio.failures import Republisher
from messaging.aio.handlers import Handlers, RequestContext, TypedHandler, typed_handler
from messaging.aio.middleware import Middleware, check
from messaging.aio.options import AgentKeywords, PublishOptions, SubscriberKeywords
from messaging.aio.outgoing import OutgoingMessage
from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.publisher import DEFAULT_EXCHANGE, Asking, AsyncEventPublisher
from messaging.aio.rpc import DIRECT_REPLY_TO
from messaging.aio.subscriber import AsyncEventSubscriber
from messaging.context import Context, ContextStore
from messaging.errors import ConfigurationError, MessagingError, StreamFailedError
from messaging.headers import CONTROL, STREAM, STREAM_ITEM
from messaging.routing import RoutingTable
from messaging.stores.select import context_store_from_config

DEFAULT_CONTEXT_TTL = 300.0

_T = TypeVar("_T")

log = logging.getLogger("messaging.agent")

MAX_WINDOW = 10_000
"""The most stream replies a caller may ask to have unread at once."""


_current_delivery: ContextVar[dict[str, Any] | None] = ContextVar(
    "messaging_current_delivery", default=None
)


def require_handler(agent: object, base: type, routing_keys: Sequence[str]) -> None:
    """An agent that consumes must say how: refuse one that binds keys but never overrode
    ``route_message`` and ``get_routing_key_map`` (a send-only agent needs neither)."""
    if not routing_keys or isinstance(routing_keys, str):
        return  # send-only; a string is refused with its own message by the consumer
    cls = type(agent)
    missing = [
        name
        for name in ("get_routing_key_map", "route_message")
        if getattr(cls, name) is getattr(base, name)
    ]
    if missing:
        raise ConfigurationError(
            f"{cls.__name__} consumes {list(routing_keys)} but does not define "
            f"{' and '.join(missing)}; define them, or pass routing_keys=[] for an agent "
            f"that only publishes and makes requests"
        )


def current_delivery() -> dict[str, Any] | None:
    """The properties of the message being handled in this thread or task, if any."""
    return _current_delivery.get()


class AgentCore:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        agent_name: str,
        exchange_name: str,
        routing_key_map: Callable[[], Mapping[str, type[ProtoMessage]]],
        context_store: ContextStore | None,
        context_ttl: float,
        declare: bool = True,
        mandatory: bool = True,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.agent_name = agent_name
        self.publisher = AsyncEventPublisher(
            pool,
            agent_name,
            exchange_name,
            declare=declare,
            mandatory=mandatory,
            middlewares=middlewares,
        )
        # None: STORE__REDIS_URL decides (Redis, shared by replicas), else process memory.
        self.contexts: ContextStore = (
            context_store if context_store is not None else context_store_from_config(agent_name)
        )
        self.context_ttl = context_ttl
        self._routing_key_map = routing_key_map
        self._routes: RoutingTable[type[ProtoMessage]] | None = None
        self.handlers = Handlers()
        self.control = ControlDesk(pool, agent_name, exchange_name)
        self._control_started = False

    def message_class(self, routing_key: str) -> type[ProtoMessage] | None:
        if self._routes is None:
            routes = {**self._routing_key_map(), **self.handlers.routing_key_map()}
            self._routes = RoutingTable(routes)
        return self._routes.lookup(routing_key)

    def add_handler(self, handler: TypedHandler) -> None:
        self.handlers.add(handler)
        self._routes = None

    def typed_handler(self, routing_key: str) -> TypedHandler:
        handler = self.handlers.lookup(routing_key)
        if handler is None:
            raise NotImplementedError(
                f"{self.agent_name} has no handler for {routing_key!r}: add one with "
                f"@agent.handler({routing_key!r}), or define route_message"
            )
        return handler

    async def start_control(self, routing_keys: Sequence[str]) -> None:
        """Open the control address, for an agent with typed handlers (cancel, streams)."""
        if not self.handlers or self._control_started:
            return
        try:
            await self.control.start(routing_keys)
        except Exception as exc:  # the pool closing under it, a broker refusing it
            # Requests are still answered; only cancelling them and streaming are not.
            log.warning(
                "%s: could not open its control address (%s); callers cannot cancel its "
                "requests, and its streams send one reply",
                self.agent_name,
                exc,
            )
            return
        self._control_started = True

    async def stop_control(self) -> None:
        if self._control_started:
            self._control_started = False
            await self.control.close()

    def converse(
        self, handler: TypedHandler, context: RequestContext, properties: dict[str, Any]
    ) -> Conversation | None:
        """The conversation a caller waiting on direct reply-to can reach (cancel, credit)."""
        reply_to = properties.get("reply_to")
        if not (self._control_started and reply_to and str(reply_to).startswith(DIRECT_REPLY_TO)):
            return None
        window = 0
        if handler.streams:
            asked = properties["headers"].get(STREAM)
            if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
                window = min(asked, MAX_WINDOW)
        return self.control.open(
            str(properties.get("correlation_id") or ""), str(reply_to), context, window
        )

    def stream_item(self, conversation: Conversation, item: ProtoMessage) -> OutgoingMessage:
        """One reply of a stream, naming this instance's control address."""
        return self.publisher.prepare(
            item,
            conversation.reply_to,
            correlation_id=conversation.correlation_id,
            exchange="",
            headers={STREAM: STREAM_ITEM, CONTROL: self.control.queue},
        )

    def context_for(self, message: ProtoMessage, properties: dict[str, Any]) -> RequestContext:
        return RequestContext(
            agent_name=self.agent_name,
            routing_key=str(properties.get("routing_key", "")),
            properties=properties,
            metadata=getattr(message, "metadata", None),
            deadline=properties.get("deadline"),
        )

    def enter(self, properties: dict[str, Any]) -> Token[dict[str, Any] | None]:
        """Attach the workflow context to ``properties`` and make it the current delivery.

        For the sync API's worker thread; on the event loop use :meth:`enter_async`.
        """
        correlation_id = properties.get("correlation_id")
        properties["context"] = self.contexts.pop(correlation_id) if correlation_id else None
        return _current_delivery.set(properties)

    async def enter_async(self, properties: dict[str, Any]) -> Token[dict[str, Any] | None]:
        """:meth:`enter` for the event loop: a store that blocks runs in a worker thread."""
        correlation_id = properties.get("correlation_id")
        properties["context"] = (
            await self._store(self.contexts.pop, correlation_id) if correlation_id else None
        )
        return _current_delivery.set(properties)

    async def _store(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a store call; one that waits on the network (Redis) off the event loop."""
        if getattr(self.contexts, "blocking", False):
            return await asyncio.to_thread(call, *args)
        return call(*args)

    @staticmethod
    def leave(token: Token[dict[str, Any] | None]) -> None:
        _current_delivery.reset(token)

    @staticmethod
    def correlation_id_for(message: ProtoMessage) -> str:
        """The request's correlation id: from its metadata, or a new one written there."""
        metadata = getattr(message, "metadata", None)
        correlation_id = (metadata.correlation_id if metadata is not None else "") or str(
            uuid.uuid4()
        )
        if metadata is not None:
            metadata.correlation_id = correlation_id
        return correlation_id

    async def publish_request(
        self, message: ProtoMessage, routing_key: str, context: Context | None
    ) -> str:
        # The context is stored before the publish: the answer can be faster
        # than the confirm (and, with replicas, land on another process).
        correlation_id = self.correlation_id_for(message)
        if context is not None:
            await self._store(self.contexts.put, correlation_id, context, self.context_ttl)
        try:
            await self.publisher.publish(message, routing_key, correlation_id=correlation_id)
        except BaseException:
            if context is not None:
                with contextlib.suppress(MessagingError):
                    await self._store(self.contexts.pop, correlation_id)
            raise
        return correlation_id

    async def publish_response(
        self,
        response: ProtoMessage,
        routing_key: str,
        correlation_id: str,
        reply_to: str | None,
    ) -> str:
        reply = self.direct_reply(response, correlation_id, reply_to)
        if reply is not None:
            return await self.publisher.send_reply(reply)
        if reply_to:
            return await self.publisher.publish(
                response,
                reply_to,
                correlation_id=correlation_id,
                exchange="",
            )
        return await self.publisher.publish(response, routing_key, correlation_id=correlation_id)

    def direct_reply(
        self, response: ProtoMessage, correlation_id: str, reply_to: str | None
    ) -> OutgoingMessage | None:
        """The answer, encoded, when it goes to a caller waiting on direct reply-to.

        Such a reply is sent without a confirm (``AsyncEventPublisher.send_reply``
        says why). None for any other destination. Pure CPU work: the sync
        agent runs it on the handler's thread.
        """
        metadata = getattr(response, "metadata", None)
        if metadata is not None and not metadata.correlation_id:
            metadata.correlation_id = correlation_id
        if not (reply_to and reply_to.startswith(DIRECT_REPLY_TO)):
            return None
        return self.publisher.prepare(
            response, reply_to, correlation_id=correlation_id, exchange=""
        )

    @staticmethod
    def reply_to_for(correlation_id: str) -> str | None:
        """Where the answer to the message in hand should go, if its sender asked."""
        delivery = _current_delivery.get()
        if delivery is None or delivery.get("correlation_id") != correlation_id:
            return None
        reply_to = delivery.get("reply_to")
        return str(reply_to) if reply_to else None

    async def close(self) -> None:
        await self.publisher.close()


_Function = TypeVar("_Function", bound=Callable[..., Any])


class AgentFace:
    """What :class:`messaging.BaseAgent` and :class:`AsyncBaseAgent` share, written once:
    the routing-key map, typed handlers, middlewares and the agent's one publisher."""

    _send_only_allowed: ClassVar[bool] = True
    _async_handlers: ClassVar[bool] = False
    agent: AgentCore
    consumer: Consumer
    middlewares: tuple[Middleware, ...]

    def _make_core(
        self,
        pool: AsyncConnectionPool,
        agent_name: str,
        exchange_name: str,
        context_store: ContextStore | None,
        context_ttl: float,
        options: AgentKeywords,
    ) -> SubscriberKeywords:
        """Make :attr:`agent` from the constructor's arguments; returns the options left
        for the subscriber (the publisher takes ``mandatory``)."""
        mandatory = options.pop("mandatory", True)
        self.agent = AgentCore(
            pool,
            agent_name,
            exchange_name,
            self.get_routing_key_map,
            context_store,
            context_ttl,
            options.get("declare", True),
            mandatory,
            options.get("middlewares", ()),
        )
        return cast(SubscriberKeywords, options)

    @property
    def send_only(self) -> bool:
        """True when built with no routing keys and no handlers: publishes, never consumes."""
        return self.consumer.send_only

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware`` around every message this agent handles and sends."""
        self.middlewares = (*self.middlewares, check(middleware))
        self.agent.publisher.use(middleware)
        return middleware

    def handler(
        self, routing_key: str, *, reply_key: str | None = None
    ) -> Callable[[_Function], _Function]:
        """Handle messages matching ``routing_key`` with the decorated function, typed by
        its annotations (:mod:`messaging.aio.handlers`); its return value is the reply.

        ``reply_key``: where the reply goes when a message came without ``reply_to``
        (by default it is then not sent). Add handlers before consuming starts.
        """

        def register(function: _Function) -> _Function:
            typed = typed_handler(function, routing_key, reply_key)
            if typed.is_async != self._async_handlers:
                raise ConfigurationError(
                    f"{type(self).__name__} runs "
                    f"{'async def' if self._async_handlers else 'plain def'} handlers; "
                    f"{typed.name} is {'async' if typed.is_async else 'not'}: use "
                    f"{'AsyncBaseAgent' if typed.is_async else 'BaseAgent'} for it"
                )
            self.consumer.bind(routing_key)
            self.agent.add_handler(typed)
            return function

        return register

    def _failure_publisher(self) -> Republisher | None:
        # Failed messages are moved on the agent's own publisher: one per agent.
        return self.agent.publisher

    async def _on_started(self) -> None:
        await self.agent.start_control(self.consumer.routing_keys)

    async def _on_stopped(self) -> None:
        await self.agent.stop_control()

    def _count_cancelled(self, conversation: Conversation) -> None:
        self.consumer.metrics.cancelled.inc()
        log.info(
            "%s: stopped working on a request its caller gave up on [correlation_id=%s]",
            self.agent.agent_name,
            conversation.correlation_id,
        )

    def _stream_failed(self, conversation: Conversation, error: Exception) -> StreamFailedError:
        return StreamFailedError(
            f"the stream failed after {conversation.sent} replies: {type(error).__name__}: {error}"
        )

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        """Routing key (or pattern) -> the protobuf class arriving with it.

        Every agent that consumes defines it, or gets it from its typed handlers.
        """
        return dict(self.agent.handlers.routing_key_map())

    def get_publish_map(self) -> dict[str, type[ProtoMessage]]:
        """Routing key -> the protobuf class this agent publishes with it (optional).

        Nothing at run time depends on it: it documents what the agent sends, for
        :mod:`messaging.asyncapi` (``chimera-bus asyncapi``), as
        :meth:`get_routing_key_map` documents what it receives.
        """
        return dict(self.agent.handlers.publish_map())

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        cls = self.agent.message_class(routing_key)
        if cls is None:
            raise KeyError(routing_key)
        return cls

    def _reply_key(self, handler: TypedHandler, properties: dict[str, Any]) -> str | None:
        """Where a typed handler's reply goes by routing key; None: to ``reply_to``, or dropped."""
        if properties.get("reply_to"):
            return None
        if handler.reply_key is None:
            log.debug(
                "%s: %s returned a reply, but the message has no reply_to and the handler "
                "no reply_key; not sent [correlation_id=%s]",
                self.agent.agent_name,
                handler.name,
                properties.get("correlation_id"),
            )
        return handler.reply_key


class AsyncBaseAgent(Asking, AgentFace, AsyncEventSubscriber):
    """The asyncio twin of :class:`messaging.BaseAgent`: ``route_message`` is a coroutine.

    Subclasses map routing keys (or patterns) to message classes in
    :meth:`get_routing_key_map` and handle messages in :meth:`route_message`;
    up to ``prefetch_count`` of them run at once. ``routing_keys=[]`` makes a
    send-only agent (a gateway, a scheduler): it publishes and makes requests,
    needs neither method, and :meth:`start` on it raises
    :class:`~messaging.errors.ConfigurationError`.

    ``mandatory=False`` lets every publish of the agent to a routing key no
    queue is bound for be dropped by the broker instead of raising
    :class:`~messaging.errors.UnroutableMessageError` (per publish:
    ``publish(..., mandatory=...)``); retries and dead-letter moves stay mandatory.
    """

    _async_handlers: ClassVar[bool] = True

    def __init__(
        self,
        connection_pool: AsyncConnectionPool,
        agent_name: str,
        routing_keys: Sequence[str] = (),
        exchange_name: str = DEFAULT_EXCHANGE,
        queue_name: str | None = None,
        prefetch_count: int = 1,
        *,
        context_store: ContextStore | None = None,
        context_ttl: float = DEFAULT_CONTEXT_TTL,
        **options: Unpack[AgentKeywords],
    ) -> None:
        subscriber_options = self._make_core(
            connection_pool, agent_name, exchange_name, context_store, context_ttl, options
        )
        super().__init__(
            connection_pool,
            agent_name,
            exchange_name,
            queue_name,
            routing_keys,
            prefetch_count,
            **subscriber_options,
        )
        require_handler(self, AsyncBaseAgent, routing_keys)

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        """Handle one message; the message is acked when it returns. Raise to retry or
        dead-letter it. By default: the typed handler for ``routing_key``."""
        handler = self.agent.typed_handler(routing_key)
        context = self.agent.context_for(message, properties)
        conversation = self.agent.converse(handler, context, properties)
        try:
            if handler.streams:
                await self._stream(handler.call(message, context), conversation, properties)
                return
            work = asyncio.ensure_future(handler.call(message, context))
            if conversation is not None:
                conversation.task = work
            try:
                reply = await asyncio.shield(work)
            except asyncio.CancelledError:
                if not work.cancelled():
                    work.cancel()  # we are being stopped: the handler goes with us
                    raise
                if conversation is None or not conversation.cancelled:
                    raise
                self._count_cancelled(conversation)
                return
        finally:
            if conversation is not None:
                self.agent.control.forget(conversation)
        if reply is None:
            return
        reply_key = self._reply_key(handler, properties)
        correlation_id = properties.get("correlation_id") or ""
        if properties.get("reply_to"):
            await self.publish_response(reply, routing_key, correlation_id)
        elif reply_key is not None:
            await self.publish(reply, reply_key, correlation_id=correlation_id or None)

    async def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        token = await self.agent.enter_async(properties)
        try:
            await self.route_message(message, properties["routing_key"], properties)
        finally:
            self.agent.leave(token)

    async def _stream(
        self,
        items: AsyncIterator[ProtoMessage],
        conversation: Conversation | None,
        properties: dict[str, Any],
    ) -> None:
        """Send what a streaming handler yields, never more than the caller's window ahead."""
        publisher, control = self.agent.publisher, self.agent.control
        try:
            if conversation is None or not conversation.window:
                # A caller that asked for one reply (request()): the first is the reply.
                first = await anext(aiter(items), None)
                if first is not None and properties.get("reply_to"):
                    await self.publish_response(first, "", properties["correlation_id"])
                return
            try:
                while await conversation.take_credit_async(conversation.credit_wait()):
                    item = await anext(aiter(items), None)
                    if item is None:
                        await publisher.send_reply(control.end_of(conversation))
                        return
                    await publisher.send_reply(self.agent.stream_item(conversation, item))
                    conversation.sent += 1
            except Exception as exc:
                await publisher.send_reply(control.error_of(conversation, exc))
                raise self._stream_failed(conversation, exc) from exc
            if conversation.cancelled:
                self._count_cancelled(conversation)
        finally:
            await cast(AsyncGenerator[ProtoMessage, None], items).aclose()

    async def publish(
        self, message: ProtoMessage, routing_key: str, **options: Unpack[PublishOptions]
    ) -> str:
        """Publish on the agent's exchange and wait for the confirm; returns the message id."""
        return await self.agent.publisher.publish(message, routing_key, **options)

    async def publish_request(
        self, message: ProtoMessage, routing_key: str, context: Context | None = None
    ) -> str:
        return await self.agent.publish_request(message, routing_key, context)

    async def publish_response(
        self,
        response: ProtoMessage,
        routing_key: str,
        correlation_id: str,
        reply_to: str | None = None,
    ) -> str:
        """Answer: to ``reply_to`` if given, else the in-hand request's, else ``routing_key``."""
        reply_to = reply_to or self.agent.reply_to_for(correlation_id)
        return await self.agent.publish_response(response, routing_key, correlation_id, reply_to)

    @property
    def _asker(self) -> AsyncEventPublisher:
        return self.agent.publisher

    async def stop(self, timeout: float | None = None) -> None:
        await super().stop(timeout)
        await self.agent.close()
