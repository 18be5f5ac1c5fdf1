"""The README's BaseAgent, for synchronous code."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any, Unpack, cast

from google.protobuf.message import Message as ProtoMessage

from messaging._portal import Portal
from messaging.aio.agent import DEFAULT_CONTEXT_TTL, AgentFace, require_handler
from messaging.aio.control import Conversation
from messaging.aio.options import AgentKeywords, PublishOptions
from messaging.aio.publisher import DEFAULT_EXCHANGE, AsyncEventPublisher
from messaging.connection import ConnectionPool
from messaging.context import Context, ContextStore
from messaging.ops import tracing
from messaging.publisher import SyncAsking
from messaging.subscriber import EventSubscriber


class BaseAgent(SyncAsking, AgentFace, EventSubscriber):
    """A subscriber that also publishes, with correlation tracking.

    Subclasses map routing keys (or patterns) to message classes in
    :meth:`get_routing_key_map` and handle messages in :meth:`route_message`.

    - :meth:`publish_request` sends a request and keeps ``context`` under its
      correlation id; the answer arrives with it as ``properties["context"]``.
    - :meth:`publish_response` answers the message in hand: to its ``reply_to``
      when the sender gave one (instead of ``routing_key``, not as well), else
      to ``routing_key`` on the agent's exchange.
    - :meth:`request` sends and blocks for the reply (direct reply-to).

    ``routing_keys=[]`` makes a send-only agent (a gateway, a scheduler): it
    publishes and makes requests, needs neither :meth:`get_routing_key_map`
    nor :meth:`route_message`, and :meth:`start_consuming` on it raises
    :class:`~messaging.errors.ConfigurationError`.

    ``mandatory=False`` lets every publish of the agent to a routing key no
    queue is bound for be dropped by the broker instead of raising
    :class:`~messaging.errors.UnroutableMessageError` (per publish:
    ``publish(..., mandatory=...)``); retries and dead-letter moves stay mandatory.
    """

    def __init__(
        self,
        connection_pool: ConnectionPool,
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
            connection_pool.aio, agent_name, exchange_name, context_store, context_ttl, options
        )
        super().__init__(
            connection_pool=connection_pool,
            agent_name=agent_name,
            exchange_name=exchange_name,
            queue_name=queue_name,
            routing_keys=routing_keys,
            prefetch_count=prefetch_count,
            **subscriber_options,
        )
        self._portal = Portal.get()
        require_handler(self, BaseAgent, routing_keys)

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        """Handle one message; the message is acked when it returns. Raise to retry or
        dead-letter it. By default: the typed handler for ``routing_key``."""
        handler = self.agent.typed_handler(routing_key)
        context = self.agent.context_for(message, properties)
        conversation = self.agent.converse(handler, context, properties)
        try:
            reply = handler.call(message, context)
            if handler.streams:
                self._stream(reply, conversation, properties)
                return
        finally:
            if conversation is not None:
                self.agent.control.forget(conversation)
        if conversation is not None and conversation.cancelled:
            self._count_cancelled(conversation)
            return
        if reply is None:
            return
        reply_key = self._reply_key(handler, properties)
        correlation_id = properties.get("correlation_id") or ""
        if properties.get("reply_to"):
            self.publish_response(reply, routing_key, correlation_id)
        elif reply_key is not None:
            self.publish(reply, reply_key, correlation_id=correlation_id or None)

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        token = self.agent.enter(properties)
        try:
            self.route_message(message, properties["routing_key"], properties)
        finally:
            self.agent.leave(token)

    def _stream(
        self,
        items: Iterator[ProtoMessage],
        conversation: Conversation | None,
        properties: dict[str, Any],
    ) -> None:
        """Send what a streaming handler yields, never more than the caller's window ahead."""
        publisher, control, send = self.agent.publisher, self.agent.control, self._portal.call
        try:
            if conversation is None or not conversation.window:
                # A caller that asked for one reply (request()): the first is the reply.
                first = next(items, None)
                if first is not None and properties.get("reply_to"):
                    self.publish_response(first, "", properties["correlation_id"])
                return
            try:
                while conversation.take_credit(conversation.credit_wait()):
                    item = next(items, None)
                    if item is None:
                        send(publisher.send_reply(control.end_of(conversation)))
                        return
                    send(publisher.send_reply(self.agent.stream_item(conversation, item)))
                    conversation.sent += 1
            except Exception as exc:
                send(publisher.send_reply(control.error_of(conversation, exc)))
                raise self._stream_failed(conversation, exc) from exc
            if conversation.cancelled:
                self._count_cancelled(conversation)
        finally:
            cast(Generator[ProtoMessage, None, None], items).close()

    def publish(
        self, message: ProtoMessage, routing_key: str, **options: Unpack[PublishOptions]
    ) -> str:
        """Publish on the agent's exchange and wait for the confirm; returns the message id."""
        return self._portal.call(
            tracing.carry(self.agent.publisher.publish(message, routing_key, **options))
        )

    def publish_request(
        self, message: ProtoMessage, routing_key: str, context: Context | None = None
    ) -> str:
        """Send a request, remembering ``context`` until its answer; returns the correlation id."""
        return self._portal.call(
            tracing.carry(self.agent.publish_request(message, routing_key, context))
        )

    def publish_response(
        self,
        response: ProtoMessage,
        routing_key: str,
        correlation_id: str,
        reply_to: str | None = None,
    ) -> str:
        """Answer: to ``reply_to`` if given, else to the reply_to of the request in
        hand with this correlation id, else to ``routing_key`` on the exchange.

        A workflow that answers its original caller from a later step keeps the
        caller's ``reply_to`` in its context and passes it here.
        """
        reply_to = reply_to or self.agent.reply_to_for(correlation_id)
        reply = self.agent.direct_reply(response, correlation_id, reply_to)
        if reply is not None:
            # From the handler in hand: sent without a wait, and the request
            # is acked once it is sent (a failure settles it as the handler's).
            sending = self.agent.publisher.send_reply(reply)
            if not self.agent.publisher.closed and self._reply_in_hand(sending):
                return reply.message_id
            return self._portal.call(sending)
        return self._portal.call(
            tracing.carry(
                self.agent.publish_response(response, routing_key, correlation_id, reply_to)
            )
        )

    @property
    def _asker(self) -> AsyncEventPublisher:
        return self.agent.publisher

    def close(self) -> None:
        """Release the agent's publishing channel (start_consuming's own channel closes on stop)."""
        self._portal.call(self.agent.close())
