"""Where a failed or looping message goes: the retry ladder, the DLQ, poison.

A message whose handler raised (or that did not decode) is published again as
a copy with ``x-chimera-*`` headers saying why: to the delay queue of its next
attempt while ``retry_delays`` last and the error is not permanent, otherwise
to the dead-letter exchange. A message the broker redelivered is swapped for a
copy that counts its redeliveries, and dead-lettered as poison past
``max_redeliveries``. The original is acked only once the copy is confirmed;
if the copy cannot be published, the original is rejected and the broker
dead-letters it itself. Either way the original is settled exactly once, here.

The copies go out on the agent's own publisher (one confirmed channel per
agent, shared with its publishes and requests).
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from messaging.aio.consumer import Consumer
from messaging.aio.incoming import headers_of, routing_key_of
from messaging.aio.outgoing import OutgoingMessage
from messaging.aio.rpc import DIRECT_REPLY_TO
from messaging.errors import DecodeError, PoisonMessageError, PublishError, StreamFailedError
from messaging.headers import (
    ATTEMPTS,
    ERROR_MESSAGE,
    ERROR_REPLY,
    ERROR_TYPE,
    FAILED_AGENT,
    MAX_ERROR_MESSAGE,
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    REDELIVERIES,
)
from messaging.topology import dlx_name, retry_queue_name
from messaging.transport import Delivery, MessageProperties, Properties
from messaging.wiretext import printable

log = logging.getLogger("messaging.subscriber")

_TRIMMED = " [truncated to fit frame_max]"


class Republisher(Protocol):
    """What failure routing needs of a publisher: a confirmed, mandatory publish of
    an encoded message with the properties given (an
    :class:`~messaging.aio.AsyncEventPublisher` is one)."""

    async def republish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: MessageProperties,
        timeout: float | None = None,
    ) -> None: ...

    async def send_reply(self, outgoing: OutgoingMessage) -> str: ...


class FailureRouter:
    """Moves one subscriber's failed and redelivered messages, and settles the originals."""

    def __init__(self, consumer: Consumer, publisher: Republisher) -> None:
        self.consumer = consumer
        self.publisher = publisher
        self.agent_name = consumer.agent_name
        self.queue_name = consumer.queue_name
        self.exchange_name = consumer.exchange_name
        self.retry_delays = consumer.retry_delays
        self.permanent_errors = consumer.permanent_errors
        self.max_redeliveries = consumer.max_redeliveries

    async def fail(self, delivery: Delivery, exc: BaseException) -> None:
        """Retry ``delivery`` through a delay queue, or dead-letter it, saying why."""
        headers = headers_of(delivery)
        attempts = _int(headers.get(ATTEMPTS)) + 1
        retry = attempts <= len(self.retry_delays) and not isinstance(exc, self.permanent_errors)
        headers.update(
            {
                ERROR_TYPE: f"{type(exc).__module__}.{type(exc).__qualname__}",
                ERROR_MESSAGE: str(exc)[:MAX_ERROR_MESSAGE],
                FAILED_AGENT: self.agent_name,
                ATTEMPTS: attempts,
            }
        )
        metrics = self.consumer.metrics
        if retry:
            target = ("", retry_queue_name(self.queue_name, attempts))
            metrics.retried.inc()
        else:
            target = (dlx_name(self.exchange_name), self.queue_name)
            metrics.dead_lettered.inc()
        self.log_failure(delivery, exc, attempts, retry)
        await self._move(delivery, target, headers)
        if not (retry or isinstance(exc, StreamFailedError)):  # a stream told its caller
            await self._tell_the_caller(delivery, headers)

    async def _tell_the_caller(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        """A request given up on: its caller, waiting on direct reply-to, gets an error reply
        (:data:`~messaging.headers.ERROR_REPLY`) at once instead of waiting out its timeout.

        Sent after the dead-letter copy, without a confirm, as any reply; a caller
        that has gone is not an error. Replies to named queues (``publish_with_reply``)
        are not sent: their consumers would take it for a message of theirs.
        """
        props = delivery.properties
        reply_to = props.reply_to
        if not (reply_to and reply_to.startswith(DIRECT_REPLY_TO)):
            return
        error = {
            "error_type": str(headers[ERROR_TYPE]),
            "message": str(headers[ERROR_MESSAGE]),
            "agent": self.agent_name,
            "correlation_id": props.correlation_id or "",
        }
        reply = OutgoingMessage(
            body=json.dumps(error).encode(),
            exchange="",
            routing_key=reply_to,
            properties=Properties(
                content_type="application/json",
                message_type=ERROR_REPLY,
                correlation_id=props.correlation_id,
                message_id=uuid.uuid4().hex,
                app_id=self.agent_name,
                timestamp=datetime.now(tz=UTC),
                headers={
                    ERROR_TYPE: error["error_type"],
                    ERROR_MESSAGE: error["message"],
                    FAILED_AGENT: self.agent_name,
                },
            ),
            mandatory=False,
            timeout=self.consumer.pool.config.publish_timeout,
        )
        try:
            await self.publisher.send_reply(reply)
        except Exception as exc:  # the request is dead-lettered; only the caller is not told
            log.warning(
                "%s: could not send the error reply for message %s: %s; its caller waits "
                "out its timeout [correlation_id=%s]",
                self.agent_name,
                printable(props.message_id),
                exc,
                printable(props.correlation_id),
                extra=_log_ids(props),
            )

    async def recount(self, delivery: Delivery) -> None:
        """Count a redelivery, and dead-letter the message past ``max_redeliveries``.

        Classic queues do not count deliveries, so the count travels in the
        message: the redelivered original is swapped for a copy (at the back
        of the queue) that carries it. A message that crashes every consumer
        that takes it thus reaches the DLQ instead of looping for ever.
        """
        headers = headers_of(delivery)
        redeliveries = _int(headers.get(REDELIVERIES)) + 1
        limit = self.max_redeliveries
        if limit is not None and redeliveries > limit:
            await self.fail(
                delivery,
                PoisonMessageError(
                    f"redelivered {redeliveries} times without an ack: each consumer holding "
                    f"it crashed or lost its connection (max_redeliveries={limit})"
                ),
            )
            return
        headers[REDELIVERIES] = redeliveries
        await self._move(delivery, ("", self.queue_name), headers)

    async def _move(
        self, delivery: Delivery, target: tuple[str, str], headers: dict[str, Any]
    ) -> None:
        """Publish a copy to ``target`` with ``headers``; ack the original once confirmed.

        If the copy cannot be published, the original is rejected and the
        broker dead-letters it itself (its ``x-death`` header says from where).
        """
        props = delivery.properties
        headers.setdefault(ORIGINAL_EXCHANGE, delivery.exchange)
        headers.setdefault(ORIGINAL_ROUTING_KEY, routing_key_of(delivery))
        headers.pop("x-death", None)
        exchange, routing_key = target
        try:
            copy = self._fitted(Properties.copy_of(props, headers=headers), len(delivery.body))
            await self.publisher.republish(delivery.body, exchange, routing_key, copy)
        except Exception as publish_error:  # whatever it was, the original must be settled
            log.error(
                "%s: could not move message %s to %s (%s); rejecting it to the broker's "
                "dead-letter exchange instead [correlation_id=%s]",
                self.agent_name,
                printable(props.message_id),
                printable(routing_key),
                str(publish_error),
                printable(props.correlation_id),
                extra=_log_ids(props),
            )
            self._settle(delivery, ack=False)
            return
        self._settle(delivery, ack=True)

    def _fitted(self, copy: Properties, body_size: int) -> Properties:
        """``copy``, trimmed to fit in one frame on the publishing connection.

        The original arrived in one frame; the headers the bus adds may push
        its copy over, and the broker would answer FRAME_ERROR by closing the
        connection, again on every retry. Only what the bus adds is cut (the
        error message); if that is not enough, PublishError, and the caller
        lets the broker dead-letter the original instead.
        """
        if not copy.message_id:
            # The client gives a message without an id one of its own (for
            # confirms): give it here, so that the size counted is the size sent.
            copy.message_id = uuid.uuid4().hex
        publishing = self.consumer.pool.publishing
        over = publishing.header_excess(copy, body_size)
        if over <= 0:
            return copy
        headers = copy.headers if copy.headers is not None else {}
        message = headers.get(ERROR_MESSAGE)
        if isinstance(message, str) and message:
            keep = len(message.encode()) - over - len(_TRIMMED.encode())
            if keep >= 0:
                headers[ERROR_MESSAGE] = message.encode()[:keep].decode("utf-8", "ignore") + (
                    _TRIMMED
                )
                over = publishing.header_excess(copy, body_size)
                if over <= 0:
                    return copy
        raise PublishError(
            f"its copy would not fit in one frame: the content header is {over} octets over "
            f"the broker's frame_max, even with the error message cut (the sender's own "
            f"headers take nearly all of it)"
        )

    def _settle(self, delivery: Delivery, *, ack: bool) -> None:
        channel = self.consumer.open_channel
        if channel is None:
            return  # closed meanwhile: the broker has the original again
        if ack:
            channel.ack(delivery.delivery_tag, delivery.generation)
        else:
            channel.reject(delivery.delivery_tag, delivery.generation, requeue=False)

    def log_failure(
        self, delivery: Delivery, exc: BaseException, attempts: int, retry: bool
    ) -> None:
        props = delivery.properties
        kind = "undecodable message" if isinstance(exc, DecodeError) else "handler failed"
        # The error goes into the record as text, not the exception: a record's
        # args outlive this call wherever a handler keeps records (pytest's log
        # capture, a MemoryHandler), and the exception's traceback holds the frames
        # that held the delivery, so each kept record would pin a message body.
        # Only a handler's failure that is dead-lettered passes its traceback on
        # (exc_info), as it must for the log to show where the handler raised;
        # its frames' locals are cleared once the record is written (a traceback
        # formats without them).
        text = str(exc)
        if retry:
            delay = self.retry_delays[attempts - 1]
            log.warning(
                "%s: %s on %s (message_id=%s, attempt %d): %s: %s; retrying in %gs "
                "[correlation_id=%s]",
                self.agent_name,
                kind,
                printable(routing_key_of(delivery)),
                printable(props.message_id),
                attempts,
                type(exc).__name__,
                text,
                delay,
                printable(props.correlation_id),
                extra=_log_ids(props),
            )
            return
        log.error(
            "%s: %s on %s (message_id=%s, attempt %d), dead-lettering: %s: %s [correlation_id=%s]",
            self.agent_name,
            kind,
            printable(routing_key_of(delivery)),
            printable(props.message_id),
            attempts,
            type(exc).__name__,
            text,
            printable(props.correlation_id),
            exc_info=exc if not isinstance(exc, DecodeError) else None,
            extra=_log_ids(props),
        )
        traceback.clear_frames(exc.__traceback__)


def _log_ids(props: MessageProperties) -> dict[str, str]:
    """The message's ids for log records written outside its handler (on the IO loop)."""
    return {
        "correlation_id": printable(props.correlation_id),
        "message_id": printable(props.message_id),
    }


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
