"""A responder's control address: how a caller reaches the instance working on its request.

The broker does not tell a responder that a caller waiting on direct reply-to
has gone. So every agent instance with typed handlers consumes a control queue
of its own (exclusive, deleted with its connection), bound to the topic
exchange ``<exchange>.control`` with the agent's routing keys. A caller that
gives up publishes a :data:`~messaging.headers.CANCEL_TYPE` message there
with the request's routing key, so it reaches whichever instance holds the
request; once a reply named the instance's queue
(:data:`~messaging.headers.CONTROL`), cancels and stream credit go straight to
it.

A control message is believed only when its ``reply_to`` is the very address
the request came from: the broker writes each caller channel's own direct
reply-to address there, so nobody else can cancel a request or widen a stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from messaging.aio.handlers import RequestContext
from messaging.aio.outgoing import OutgoingMessage
from messaging.aio.pool import AsyncConnectionPool
from messaging.headers import (
    CANCEL_TYPE,
    CONTROL,
    CREDIT,
    CREDIT_TYPE,
    END_TYPE,
    ERROR_MESSAGE,
    ERROR_REPLY,
    ERROR_TYPE,
    FAILED_AGENT,
    STREAM,
    STREAM_END,
)
from messaging.topology import BindingSpec, ExchangeSpec, QueueSpec, Topology, control_exchange
from messaging.transport import Channel, Delivery, Properties
from messaging.wiretext import printable

log = logging.getLogger("messaging.agent")


IDLE_CREDIT_LIMIT = 60.0
"""Seconds a stream without a deadline waits for its caller's credit before giving up."""


@dataclass
class Conversation:
    """One request an instance is working on, as its caller can still reach it."""

    correlation_id: str
    reply_to: str
    context: RequestContext
    window: int = 0
    """Replies the caller may have unread at once (0: not a stream)."""
    task: asyncio.Task[object] | None = None
    sent: int = 0
    _credit: int = 0
    _credit_changed: threading.Condition = field(default_factory=threading.Condition)
    _credit_event: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self._credit = self.window

    @property
    def cancelled(self) -> bool:
        return self.context.cancelled

    def cancel(self) -> None:
        self.context.cancel()
        if self.task is not None:
            self.task.cancel()
        self._wake()

    def grant(self, credit: int) -> None:
        with self._credit_changed:
            self._credit += credit
        self._wake()

    def _wake(self) -> None:
        with self._credit_changed:
            self._credit_changed.notify_all()
        if self._credit_event is not None:
            self._credit_event.set()

    def credit_wait(self) -> float:
        """How long a reply may wait for credit: until the caller's deadline, or, for a
        caller that gave none, :data:`IDLE_CREDIT_LIMIT` (a caller that died without a
        cancel must not hold a handler for ever)."""
        left = self.context.time_left()
        return IDLE_CREDIT_LIMIT if left is None else left

    def take_credit(self, timeout: float | None) -> bool:
        """Wait (on a handler's thread) until one more reply may go; False if cancelled or
        ``timeout`` passed first."""
        with self._credit_changed:
            ok = self._credit_changed.wait_for(lambda: self._credit > 0 or self.cancelled, timeout)
            if not ok or self.cancelled:
                return False
            self._credit -= 1
            return True

    async def take_credit_async(self, timeout: float | None) -> bool:
        """:meth:`take_credit` on the event loop."""
        if self._credit_event is None:
            self._credit_event = asyncio.Event()
        while self._credit <= 0 and not self.cancelled:
            self._credit_event.clear()
            try:
                await asyncio.wait_for(self._credit_event.wait(), timeout)
            except TimeoutError:
                return False
        if self.cancelled:
            return False
        with self._credit_changed:
            self._credit -= 1
        return True


class ControlDesk:
    """One agent instance's control queue, and the conversations it can be told about."""

    def __init__(self, pool: AsyncConnectionPool, agent_name: str, exchange_name: str) -> None:
        self.pool = pool
        self.agent_name = agent_name
        self.exchange = control_exchange(exchange_name)
        self.queue = f"{agent_name}.control.{uuid.uuid4().hex[:16]}"
        self._open: dict[str, Conversation] = {}
        self._channel: Channel | None = None

    async def start(self, routing_keys: Sequence[str]) -> None:
        channel = self._channel = self.pool.consuming.channel(f"control:{self.agent_name}")
        await channel.declare(
            Topology(
                exchanges=(ExchangeSpec(self.exchange, "topic"),),
                queues=(QueueSpec(self.queue, durable=False, exclusive=True, auto_delete=True),),
                bindings=tuple(BindingSpec(self.queue, self.exchange, k) for k in routing_keys),
            )
        )
        await channel.consume(self.queue, self._on_control, no_ack=True, inline=True)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await self.pool.consuming.release(channel)
        for conversation in list(self._open.values()):
            conversation.cancel()

    def open(
        self, correlation_id: str, reply_to: str, context: RequestContext, window: int = 0
    ) -> Conversation:
        conversation = Conversation(correlation_id, reply_to, context, window)
        self._open[correlation_id] = conversation
        return conversation

    def forget(self, conversation: Conversation) -> None:
        if self._open.get(conversation.correlation_id) is conversation:
            del self._open[conversation.correlation_id]

    def _on_control(self, delivery: Delivery) -> None:
        props = delivery.properties
        conversation = self._open.get(props.correlation_id or "")
        if conversation is None or props.reply_to != conversation.reply_to:
            return  # not ours, over already, or not from the caller that asked: data
        if props.message_type == CANCEL_TYPE:
            log.info(
                "%s: the caller gave up; cancelling [correlation_id=%s]",
                self.agent_name,
                printable(conversation.correlation_id),
            )
            conversation.cancel()
        elif props.message_type == CREDIT_TYPE:
            credit = (props.headers or {}).get(CREDIT)
            if isinstance(credit, int) and not isinstance(credit, bool) and 0 < credit <= 2**20:
                conversation.grant(credit)

    def marker(
        self, conversation: Conversation, message_type: str, headers: dict[str, object]
    ) -> OutgoingMessage:
        """A reply without a message (a stream's end, an error), to the caller."""
        return OutgoingMessage(
            body=b"",
            exchange="",
            routing_key=conversation.reply_to,
            properties=Properties(
                content_type="application/json" if message_type == ERROR_REPLY else None,
                message_type=message_type,
                correlation_id=conversation.correlation_id,
                message_id=uuid.uuid4().hex,
                app_id=self.agent_name,
                timestamp=datetime.now(tz=UTC),
                headers={CONTROL: self.queue, **headers},
            ),
            mandatory=False,
            timeout=self.pool.config.publish_timeout,
        )

    def end_of(self, conversation: Conversation) -> OutgoingMessage:
        return self.marker(conversation, END_TYPE, {STREAM: STREAM_END})

    def error_of(self, conversation: Conversation, error: BaseException) -> OutgoingMessage:
        error_type = f"{type(error).__module__}.{type(error).__qualname__}"
        marker = self.marker(
            conversation,
            ERROR_REPLY,
            {ERROR_TYPE: error_type, ERROR_MESSAGE: str(error), FAILED_AGENT: self.agent_name},
        )
        body = {
            "error_type": error_type,
            "message": str(error),
            "agent": self.agent_name,
            "correlation_id": conversation.correlation_id,
        }
        return OutgoingMessage(
            json.dumps(body).encode(),
            marker.exchange,
            marker.routing_key,
            marker.properties,
            marker.mandatory,
            marker.timeout,
        )
