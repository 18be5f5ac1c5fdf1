"""Agents: a subscriber and a publisher in one, with correlation tracking.

:class:`AgentCore` is what the sync :class:`messaging.BaseAgent` and the
async :class:`AsyncBaseAgent` share: the routing-key map, the workflow
context store, the current delivery, and request/response.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, ClassVar, TypeVar, Unpack, cast

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.failures import Republisher
from messaging.aio.middleware import Middleware
from messaging.aio.options import AgentKeywords, PublishOptions, SubscriberKeywords
from messaging.aio.outgoing import OutgoingMessage
from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.publisher import DEFAULT_EXCHANGE, AsyncEventPublisher
from messaging.aio.rpc import DIRECT_REPLY_TO, Gathered, Reply
from messaging.aio.subscriber import AsyncEventSubscriber
from messaging.context import Context, ContextStore
from messaging.errors import ConfigurationError, MessagingError
from messaging.routing import RoutingTable
from messaging.stores.select import context_store_from_config

DEFAULT_CONTEXT_TTL = 300.0

_T = TypeVar("_T")

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

    def message_class(self, routing_key: str) -> type[ProtoMessage] | None:
        if self._routes is None:
            self._routes = RoutingTable(dict(self._routing_key_map()))
        return self._routes.lookup(routing_key)

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


class AsyncBaseAgent(AsyncEventSubscriber):
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

    _send_only_allowed: ClassVar[bool] = True

    def __init__(
        self,
        connection_pool: AsyncConnectionPool,
        agent_name: str,
        routing_keys: Sequence[str],
        exchange_name: str = DEFAULT_EXCHANGE,
        queue_name: str | None = None,
        prefetch_count: int = 1,
        *,
        context_store: ContextStore | None = None,
        context_ttl: float = DEFAULT_CONTEXT_TTL,
        **options: Unpack[AgentKeywords],
    ) -> None:
        mandatory = options.pop("mandatory", True)  # its publisher's; the rest: the subscriber's
        self.agent = AgentCore(
            connection_pool,
            agent_name,
            exchange_name,
            self.get_routing_key_map,
            context_store,
            context_ttl,
            options.get("declare", True),
            mandatory,
            options.get("middlewares", ()),
        )
        super().__init__(
            connection_pool,
            agent_name,
            exchange_name,
            queue_name,
            routing_keys,
            prefetch_count,
            **cast(SubscriberKeywords, options),
        )
        require_handler(self, AsyncBaseAgent, routing_keys)

    @property
    def send_only(self) -> bool:
        """True when built with ``routing_keys=[]``: publishes, never consumes."""
        return self.consumer.send_only

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware`` around every message this agent handles and sends."""
        self.agent.publisher.use(super().use(middleware))
        return middleware

    def _failure_publisher(self) -> Republisher | None:
        # Failed messages are moved on the agent's own publisher: one per agent.
        return self.agent.publisher

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        """Routing key (or pattern) -> the protobuf class arriving with it.

        Every agent that consumes defines it; a send-only agent need not.
        """
        return {}

    def get_publish_map(self) -> dict[str, type[ProtoMessage]]:
        """Routing key -> the protobuf class this agent publishes with it (optional).

        Nothing at run time depends on it: it documents what the agent sends, for
        :mod:`messaging.asyncapi` (``chimera-bus asyncapi``), as
        :meth:`get_routing_key_map` documents what it receives.
        """
        return {}

    async def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        """Handle one message; the message is acked when it returns. Raise to retry or
        dead-letter it. Every agent that consumes defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define route_message")

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        cls = self.agent.message_class(routing_key)
        if cls is None:
            raise KeyError(routing_key)
        return cls

    async def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        token = await self.agent.enter_async(properties)
        try:
            await self.route_message(message, properties["routing_key"], properties)
        finally:
            self.agent.leave(token)

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

    async def request(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 30.0,
        *,
        response_type: type[Reply] | None = None,
    ) -> Reply:
        """Send a request and wait for its reply; see :meth:`AsyncEventPublisher.request`."""
        return await self.agent.publisher.request(
            message, routing_key, timeout, response_type=response_type
        )

    async def gather(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 5.0,
        *,
        max_replies: int | None = None,
        response_type: type[ProtoMessage] | None = None,
    ) -> Gathered:
        """Ask every agent bound to ``routing_key``; see :meth:`AsyncEventPublisher.gather`."""
        return await self.agent.publisher.gather(
            message, routing_key, timeout, max_replies=max_replies, response_type=response_type
        )

    async def stop(self, timeout: float | None = None) -> None:
        await super().stop(timeout)
        await self.agent.close()
