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
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message as ProtoMessage
from typing_extensions import TypeVar

from messaging.aio.deadline import deadline_header, inherited_timeout
from messaging.aio.once import Once
from messaging.aio.outgoing import OutgoingMessage
from messaging.errors import (
    ConnectionFailedError,
    DecodeError,
    InvalidMessageError,
    RemoteError,
    RequestTimeoutError,
)
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
from messaging.serialization import deserialize, message_class_for
from messaging.topology import ExchangeSpec, Topology, control_exchange
from messaging.transport import Channel, Delivery, Properties
from messaging.wiretext import printable

log = logging.getLogger("messaging.rpc")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

Reply = TypeVar("Reply", bound=ProtoMessage, default=ProtoMessage)
"""A request's reply: the ``response_type`` asked for, else any message."""


class RequestSender(Protocol):
    """What a requester needs of a publisher: its channel and exchange, and prepare/send."""

    @property
    def channel(self) -> Channel: ...

    @property
    def exchange_name(self) -> str: ...

    @property
    def agent_name(self) -> str: ...

    def prepare(
        self,
        message: ProtoMessage,
        routing_key: str,
        *,
        correlation_id: str | None = ...,
        reply_to: str | None = ...,
        persistent: bool = ...,
        timeout: float | None = ...,
        headers: Mapping[str, Any] | None = ...,
    ) -> OutgoingMessage: ...

    def send(self, outgoing: OutgoingMessage) -> Coroutine[Any, Any, str]: ...


class Replies:
    """The replies to one correlation id, in arrival order, for a caller that takes several
    (scatter-gather, streams). Filled on the reader; read by the caller's task."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Delivery | BaseException] = asyncio.Queue()

    def put(self, delivery: Delivery) -> None:
        self._queue.put_nowait(delivery)

    def fail(self, error: BaseException) -> None:
        self._queue.put_nowait(error)

    async def get(self) -> Delivery:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class ReplyCorrelator:
    """Hands each reply arriving on our reply-to address to whoever waits for its
    correlation id: one future (``request``), or a :class:`Replies` feed."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Delivery] | Replies] = {}

    def expect_one(self, correlation_id: str) -> asyncio.Future[Delivery]:
        self._check_free(correlation_id)
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        return future

    def expect_many(self, correlation_id: str) -> Replies:
        self._check_free(correlation_id)
        replies = self._waiting[correlation_id] = Replies()
        return replies

    def forget(self, correlation_id: str) -> None:
        self._waiting.pop(correlation_id, None)

    def _check_free(self, correlation_id: str) -> None:
        if correlation_id in self._waiting:
            raise ValueError(f"a request with correlation_id {correlation_id!r} is in flight")

    def on_reply(self, delivery: Delivery) -> None:
        """Called on the reader for every reply (no Task each)."""
        correlation_id = delivery.properties.correlation_id or ""
        waiting = self._waiting.get(correlation_id)
        if isinstance(waiting, Replies):
            waiting.put(delivery)
        elif waiting is not None and not waiting.done():
            waiting.set_result(delivery)
        else:
            # A stream's replies in flight when its reader left are expected: no warning.
            streamed = (delivery.properties.headers or {}).get(STREAM) is not None
            log.log(
                logging.DEBUG if streamed else logging.WARNING,
                "reply arrived after its caller stopped waiting; dropped [correlation_id=%s]",
                printable(correlation_id),
            )

    def fail_all(self, error: Callable[[str], BaseException]) -> None:
        """Every caller still waiting gets ``error(correlation_id)`` (the channel is gone)."""
        waiting, self._waiting = self._waiting, {}
        for correlation_id, waiter in waiting.items():
            if isinstance(waiter, Replies):
                waiter.fail(error(correlation_id))
            elif not waiter.done():
                waiter.set_exception(error(correlation_id))


def decoded_reply(delivery: Delivery, response_type: type[Reply] | None = None) -> Reply:
    """The reply's message; :class:`RemoteError` for an error reply, :class:`DecodeError`
    for one that is not the ``response_type`` asked for."""
    props = delivery.properties
    if props.message_type == ERROR_REPLY:
        # Believed: it answers a request of ours, on our own reply-to address.
        raise _remote_error(delivery, props.correlation_id or "")
    cls = message_class_for(props.message_type or "")
    if response_type is not None and not issubclass(cls, response_type):
        raise DecodeError(
            f"the reply is a {props.message_type}, not the {response_type.DESCRIPTOR.full_name} "
            f"asked for [correlation_id={printable(props.correlation_id)}]"
        )
    return deserialize(delivery.body, cls)  # type: ignore[return-value]  # checked above


class AsyncRequester:
    """Requests over direct reply-to, on a publisher's confirmed channel."""

    def __init__(self, publisher: RequestSender) -> None:
        self.publisher = publisher
        self.replies = ReplyCorrelator()
        self._ensure_consuming = Once(self._consume_replies)
        self._ensure_control_exchange = Once(self._declare_control_exchange)
        self._telling: set[asyncio.Task[None]] = set()
        publisher.channel.on_reopen(self._on_reopen)

    async def _declare_control_exchange(self) -> None:
        exchange = ExchangeSpec(control_exchange(self.publisher.exchange_name), "topic")
        await self.publisher.channel.declare(Topology(exchanges=(exchange,)))

    async def _consume_replies(self) -> None:
        # Direct reply-to needs its consumer (no-ack) on the publishing channel
        # before the first request; the managed channel re-issues it on reopen.
        await self.publisher.channel.consume(
            DIRECT_REPLY_TO, self.replies.on_reply, no_ack=True, inline=True
        )

    def _prepare(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float,
        correlation_id: str,
        headers: Mapping[str, Any] | None = None,
    ) -> OutgoingMessage:
        outgoing = self.publisher.prepare(
            message,
            routing_key,
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            persistent=False,
            timeout=timeout,
            headers={**(headers or {}), DEADLINE: deadline_header(timeout)},
        )
        # The request lives in its queue no longer than its caller waits: one
        # whose caller gave up is dropped by the broker (dead-lettered to the
        # responder's DLQ, x-death reason "expired") instead of being processed
        # for nobody. A responder already holding it still answers; that late
        # reply is dropped with a warning.
        outgoing.properties.expiration = str(max(1, math.ceil(timeout * 1000)))
        return outgoing

    async def request(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 30.0,
        *,
        correlation_id: str | None = None,
        response_type: type[Reply] | None = None,
    ) -> Reply:
        """Send ``message`` and wait for the reply; raises :class:`RequestTimeoutError`."""
        timeout = inherited_timeout(timeout)
        await self._ensure_consuming()
        correlation_id = correlation_id or str(uuid.uuid4())
        reply = self.replies.expect_one(correlation_id)
        loop = asyncio.get_running_loop()
        try:
            outgoing = self._prepare(message, routing_key, timeout, correlation_id)
        except BaseException:
            self.replies.forget(correlation_id)
            raise
        # Reply or return: the request is mandatory, so one that no queue
        # takes is returned and fails `sending`, which fails the caller; one
        # that was routed is answered. A reply proves the request arrived, so
        # the confirm is not waited for once the reply is here. No asyncio.wait
        # or timeout scope: two callbacks and one timer per request.
        sending = loop.create_task(self.publisher.send(outgoing))
        sending.add_done_callback(functools.partial(_fail_on_refusal, reply))
        expiry = loop.call_later(timeout, _expire, reply, routing_key, timeout, correlation_id)
        try:
            return decoded_reply(await reply, response_type)
        finally:
            expiry.cancel()
            self.replies.forget(correlation_id)
            if not (reply.done() and not reply.cancelled() and reply.exception() is None):
                self._give_up(correlation_id, routing_key, None, sending)
            if not sending.done():
                # Answered (or given up on) before the confirm came: stop
                # waiting for it, and never send the request again.
                sending.cancel()

    async def stream(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float,
        *,
        window: int = 16,
        response_type: type[Reply] | None = None,
    ) -> AsyncGenerator[Reply, None]:
        """Send ``message`` and yield its replies as they come, in order, until the
        responder's end marker; never more than ``window`` unread at once."""
        if not 1 <= window <= 10_000:
            raise InvalidMessageError(f"window must be from 1 to 10000, got {window!r}")
        timeout = inherited_timeout(timeout)
        await self._ensure_consuming()
        correlation_id = str(uuid.uuid4())
        replies = self.replies.expect_many(correlation_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        control: str | None = None
        sent = finished = False
        try:
            await self.publisher.send(
                self._prepare(message, routing_key, timeout, correlation_id, {STREAM: window})
            )
            sent = True
            unthanked = 0  # replies read since the last credit
            while True:
                try:
                    delivery = await asyncio.wait_for(replies.get(), deadline - loop.time())
                except TimeoutError:
                    raise RequestTimeoutError(
                        f"the stream from {routing_key!r} did not end within {timeout:.1f}s "
                        f"[correlation_id={correlation_id}]"
                    ) from None
                headers = delivery.properties.headers or {}
                control = control or _text(headers.get(CONTROL))
                marker = headers.get(STREAM)
                if delivery.properties.message_type == ERROR_REPLY:
                    finished = True
                    raise _remote_error(delivery, correlation_id)
                if marker == STREAM_END:
                    finished = True
                    return
                item = decoded_reply(delivery, response_type)
                if marker != STREAM_ITEM:
                    finished = True  # a plain reply: a responder that does not stream
                    yield item
                    return
                yield item
                unthanked += 1
                if control is not None and unthanked >= max(1, window // 2):
                    await self._tell(CREDIT_TYPE, correlation_id, control, "", unthanked)
                    unthanked = 0
        finally:
            self.replies.forget(correlation_id)
            if sent and not finished:
                self._give_up(correlation_id, routing_key, control, None)

    def _give_up(
        self,
        correlation_id: str,
        routing_key: str,
        control: str | None,
        sending: asyncio.Task[str] | None,
    ) -> None:
        """Tell the responder working on it that its caller has gone (in the background)."""
        if (
            sending is not None
            and sending.done()
            and not sending.cancelled()
            and sending.exception() is not None
        ):
            return  # never delivered: nobody to tell
        if control is not None:
            told = self._tell(CANCEL_TYPE, correlation_id, control, "")
        else:
            told = self._tell(CANCEL_TYPE, correlation_id, routing_key, None)
        task = asyncio.get_running_loop().create_task(told)
        self._telling.add(task)
        task.add_done_callback(self._told)

    def _told(self, task: asyncio.Task[None]) -> None:
        self._telling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not tell a responder its caller gave up: %s", task.exception())

    async def _tell(
        self,
        message_type: str,
        correlation_id: str,
        routing_key: str,
        exchange: str | None,
        credit: int = 0,
    ) -> None:
        """Send a control message: to ``exchange`` (``""``: a control queue by name), or,
        for None, to the control exchange with the request's own routing key."""
        if exchange is None:
            await self._ensure_control_exchange()
            exchange = control_exchange(self.publisher.exchange_name)
        headers: dict[str, Any] = {CREDIT: credit} if credit else {}
        outgoing = OutgoingMessage(
            body=b"",
            exchange=exchange,
            routing_key=routing_key,
            properties=Properties(
                message_type=message_type,
                correlation_id=correlation_id,
                # The broker writes our own address here: proof to the responder that
                # this comes from the caller that made the request.
                reply_to=DIRECT_REPLY_TO,
                app_id=self.publisher.agent_name,
                message_id=uuid.uuid4().hex,
                delivery_mode=1,
                headers=headers or None,
            ),
            mandatory=False,
            timeout=5.0,
        )
        await self.publisher.send(outgoing)

    async def gather(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float,
        *,
        max_replies: int | None = None,
        response_type: type[ProtoMessage] | None = None,
    ) -> Gathered:
        """Ask every queue bound to ``routing_key`` and take the replies that arrive
        within ``timeout`` (or the first ``max_replies``)."""
        if max_replies is not None and max_replies < 1:
            raise InvalidMessageError(f"max_replies must be 1 or more, got {max_replies!r}")
        timeout = inherited_timeout(timeout)
        await self._ensure_consuming()
        correlation_id = str(uuid.uuid4())
        replies = self.replies.expect_many(correlation_id)
        gathered = Gathered(correlation_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await self.publisher.send(self._prepare(message, routing_key, timeout, correlation_id))
            while max_replies is None or len(gathered.answers) < max_replies:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    delivery = await asyncio.wait_for(replies.get(), left)
                except TimeoutError:
                    break
                gathered.add(delivery, response_type)
        finally:
            self.replies.forget(correlation_id)
        return gathered

    async def _on_reopen(self, generation: int) -> None:
        self.replies.fail_all(
            lambda correlation_id: ConnectionFailedError(
                "the connection was lost while waiting for the reply; the request "
                f"may or may not have been handled [correlation_id={correlation_id}]"
            )
        )


@dataclass(frozen=True)
class Answer:
    """One agent's answer to a :meth:`AsyncRequester.gather`: its reply, or its error."""

    agent: str
    message: ProtoMessage | None
    error: RemoteError | DecodeError | None


@dataclass
class Gathered:
    """What :meth:`~messaging.aio.AsyncEventPublisher.gather` collected by its deadline."""

    correlation_id: str
    answers: list[Answer] = field(default_factory=list)

    def add(self, delivery: Delivery, response_type: type[ProtoMessage] | None) -> None:
        agent = delivery.properties.app_id or ""
        try:
            self.answers.append(Answer(agent, decoded_reply(delivery, response_type), None))
        except (RemoteError, DecodeError) as error:
            self.answers.append(Answer(agent, None, error))

    @property
    def replies(self) -> list[ProtoMessage]:
        """The replies that are answers (not errors), in arrival order."""
        return [answer.message for answer in self.answers if answer.message is not None]

    @property
    def agents(self) -> list[str]:
        """Who answered (an error counts as an answer), in arrival order."""
        return [answer.agent for answer in self.answers]

    @property
    def errors(self) -> list[RemoteError | DecodeError]:
        return [answer.error for answer in self.answers if answer.error is not None]


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


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


def _fail_on_refusal(reply: asyncio.Future[Delivery], sending: asyncio.Task[str]) -> None:
    """The request was returned, nacked or never sent: its caller gets that error."""
    if sending.cancelled():
        return
    error = sending.exception()  # always retrieved: a failure after the reply changes nothing
    if error is not None and not reply.done():
        reply.set_exception(error)


def _expire(
    reply: asyncio.Future[Delivery], routing_key: str, timeout: float, correlation_id: str
) -> None:
    if not reply.done():
        reply.set_exception(
            RequestTimeoutError(
                f"no reply to {routing_key!r} within {timeout:.1f}s "
                f"[correlation_id={correlation_id}]"
            )
        )
