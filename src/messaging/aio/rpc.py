"""Request/response over RabbitMQ's direct reply-to.

Requests go out on the publisher's confirmed channel with ``reply_to`` set to
``amq.rabbitmq.reply-to`` and ``expiration`` set to the caller's timeout; the
broker routes each answer straight back to that channel, with no reply queue
to declare or clean up.

Requests are transient (``delivery_mode`` 1), unlike every other publish. A
request cannot usefully outlive the broker process: its reply address dies
with the caller's channel, and the caller of a request cut off by a lost
connection is told at once that it may or may not have been handled. A
persistent request to a classic queue is written to disk before the broker
confirms it, which cost every round trip 0.1-0.3 ms on the bench's machine
(``bench/rpc_shapes.py``; bench/README.md, "Levers tried"). Quorum queues
store every message whatever its ``delivery_mode``.

A request waits for its reply *or* its return (an unroutable request fails
at once), not for its confirm first. Every caller waits on a future keyed by
its correlation id, so any number of requests are in flight together. A
reply whose caller has gone (timed out) is dropped with a warning, never
handed to another caller. If the channel is lost, the pseudo-queue goes with
it: waiting callers fail at once instead of waiting out their timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.once import Once
from messaging.aio.outgoing import OutgoingMessage
from messaging.errors import (
    ConnectionFailedError,
    DecodeError,
    RemoteError,
    RequestTimeoutError,
)
from messaging.headers import ERROR_MESSAGE, ERROR_REPLY, ERROR_TYPE, FAILED_AGENT
from messaging.serialization import deserialize, message_class_for
from messaging.transport import Channel, Delivery

log = logging.getLogger("messaging.rpc")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class RequestSender(Protocol):
    """What a requester needs of a publisher: its channel, and prepare/send."""

    @property
    def channel(self) -> Channel: ...

    def prepare(
        self,
        message: ProtoMessage,
        routing_key: str,
        *,
        correlation_id: str | None = ...,
        reply_to: str | None = ...,
        persistent: bool = ...,
        timeout: float | None = ...,
    ) -> OutgoingMessage: ...

    def send(self, outgoing: OutgoingMessage) -> Coroutine[Any, Any, str]: ...


class AsyncRequester:
    def __init__(self, publisher: RequestSender) -> None:
        self.publisher = publisher
        self._pending: dict[str, asyncio.Future[ProtoMessage]] = {}
        self._ensure_consuming = Once(self._consume_replies)
        publisher.channel.on_reopen(self._on_reopen)

    async def _consume_replies(self) -> None:
        # Direct reply-to needs its consumer (no-ack) on the publishing channel
        # before the first request; the managed channel re-issues it on reopen.
        # _on_reply only completes a future: called on the reader, no Task each.
        await self.publisher.channel.consume(
            DIRECT_REPLY_TO, self._on_reply, no_ack=True, inline=True
        )

    async def request(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 30.0,
        *,
        correlation_id: str | None = None,
    ) -> ProtoMessage:
        """Send ``message`` and wait for the reply; raises :class:`RequestTimeoutError`."""
        await self._ensure_consuming()
        correlation_id = correlation_id or str(uuid.uuid4())
        if correlation_id in self._pending:
            raise ValueError(f"a request with correlation_id {correlation_id!r} is in flight")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ProtoMessage] = loop.create_future()
        outgoing = self.publisher.prepare(
            message,
            routing_key,
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            persistent=False,
            timeout=timeout,
        )
        # The request lives in its queue no longer than its caller waits: one
        # whose caller gave up is dropped by the broker (dead-lettered to the
        # responder's DLQ, x-death reason "expired") instead of being processed
        # for nobody. A responder already holding it still answers; that late
        # reply is dropped here with a warning.
        outgoing.properties.expiration = str(max(1, math.ceil(timeout * 1000)))
        self._pending[correlation_id] = future
        # Reply or return: the request is mandatory, so one that no queue
        # takes is returned and fails `sending`, which fails the caller; one
        # that was routed is answered. A reply proves the request arrived, so
        # the confirm is not waited for once the reply is here (a persistent
        # request's confirm can come after the reply). No asyncio.wait or
        # timeout scope: two callbacks and one timer per request.
        sending = loop.create_task(self.publisher.send(outgoing))
        sending.add_done_callback(functools.partial(_fail_on_refusal, future))
        expiry = loop.call_later(timeout, _expire, future, routing_key, timeout, correlation_id)
        try:
            return await future
        finally:
            expiry.cancel()
            self._pending.pop(correlation_id, None)
            if not sending.done():
                # Answered (or given up on) before the confirm came: stop
                # waiting for it, and never send the request again.
                sending.cancel()

    def _on_reply(self, delivery: Delivery) -> None:
        props = delivery.properties
        correlation_id = props.correlation_id or ""
        future = self._pending.get(correlation_id)
        if future is None or future.done():
            log.warning(
                "reply arrived after its caller stopped waiting; dropped [correlation_id=%s]",
                correlation_id,
            )
            return
        if props.message_type == ERROR_REPLY:
            # Believed: it answers a request of ours, on our own reply-to address.
            future.set_exception(_remote_error(delivery, correlation_id))
            return
        try:
            cls = message_class_for(props.message_type or "")
            future.set_result(deserialize(delivery.body, cls))
        except DecodeError as exc:
            future.set_exception(exc)

    async def _on_reopen(self, generation: int) -> None:
        pending, self._pending = self._pending, {}
        for correlation_id, future in pending.items():
            if not future.done():
                future.set_exception(
                    ConnectionFailedError(
                        "the connection was lost while waiting for the reply; the request "
                        f"may or may not have been handled [correlation_id={correlation_id}]"
                    )
                )


def _remote_error(delivery: Delivery, correlation_id: str) -> RemoteError:
    headers = delivery.properties.headers or {}

    def text(key: str) -> str:
        value = headers.get(key)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

    return RemoteError(
        text(ERROR_TYPE) or "unknown",
        text(ERROR_MESSAGE),
        text(FAILED_AGENT) or (delivery.properties.app_id or ""),
        correlation_id,
    )


def _fail_on_refusal(reply: asyncio.Future[ProtoMessage], sending: asyncio.Task[str]) -> None:
    """The request was returned, nacked or never sent: its caller gets that error."""
    if sending.cancelled():
        return
    error = sending.exception()  # always retrieved: a failure after the reply changes nothing
    if error is not None and not reply.done():
        reply.set_exception(error)


def _expire(
    reply: asyncio.Future[ProtoMessage], routing_key: str, timeout: float, correlation_id: str
) -> None:
    if not reply.done():
        reply.set_exception(
            RequestTimeoutError(
                f"no reply to {routing_key!r} within {timeout:.1f}s "
                f"[correlation_id={correlation_id}]"
            )
        )
