"""The asyncio subscriber: async handlers on the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, Self, Unpack

from google.protobuf.message import Message as ProtoMessage

from messaging._shutdown import (
    ASYNC_GRACE,
    Watchdog,
)
from messaging.aio import hooks
from messaging.aio.consumer import Consumer
from messaging.aio.failures import Republisher
from messaging.aio.middleware import Middleware, check
from messaging.aio.options import SubscriberKeywords, SubscriberOptions
from messaging.aio.pipeline import Pipeline
from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.errors import ShutdownTimeoutError
from messaging.transport import Delivery

log = logging.getLogger("messaging.subscriber")


class SubscriberFace(ABC):
    """What :class:`messaging.EventSubscriber` and :class:`AsyncEventSubscriber` share,
    written once: their options, their consumer, middlewares and the hooks agents use."""

    # Agents may be send-only (routing_keys=[]); a plain subscriber must consume something.
    _send_only_allowed: ClassVar[bool] = False

    def _configure(
        self,
        pool: AsyncConnectionPool,
        agent_name: str,
        exchange_name: str,
        queue_name: str | None,
        routing_keys: Sequence[str],
        prefetch_count: int,
        options: SubscriberKeywords,
    ) -> None:
        """Validate the constructor's arguments (nothing is declared) and make the consumer."""
        self.agent_name = agent_name
        settings = SubscriberOptions.of(
            agent_name,
            exchange_name,
            queue_name,
            routing_keys,
            prefetch_count,
            options,
            send_only_allowed=self._send_only_allowed,
        )
        self.shutdown_timeout = settings.shutdown_timeout
        self.middlewares: tuple[Middleware, ...] = settings.middlewares
        self.consumer = Consumer(pool, settings, self.get_message_class, self.accepted_types)

    @property
    def exchange_name(self) -> str:
        return self.consumer.exchange_name

    @property
    def queue_name(self) -> str:
        return self.consumer.queue_name

    @property
    def routing_keys(self) -> tuple[str, ...]:
        return self.consumer.routing_keys

    @property
    def is_consuming(self) -> bool:
        """True while the consumer is attached to an open channel on the broker."""
        return self.consumer.is_consuming

    def use(self, middleware: Middleware) -> Middleware:
        """Run ``middleware`` around every message handled here, after the pool's and the
        ones given before; takes effect when consuming starts."""
        self.middlewares = (*self.middlewares, check(middleware))
        return middleware

    @abstractmethod
    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        """The protobuf class of messages arriving with ``routing_key``."""

    def accepted_types(self, message_class: type[ProtoMessage]) -> Collection[str]:
        """``type`` property values taken for ``message_class`` besides its own full name.

        A message whose ``type`` is neither is dead-lettered as a
        :class:`~messaging.errors.DecodeError`. Override to take a compatible
        message published under another name, e.g. ``["chimera.v2.QueryRequest"]``.
        """
        return ()

    async def _on_started(self) -> None:  # noqa: B027  (a hook: empty here)
        """Consuming has begun (on the loop); for subclasses to start what goes with it."""

    async def _on_stopped(self) -> None:  # noqa: B027  (a hook: empty here)
        """Consuming has ended (on the loop)."""

    def _failure_publisher(self) -> Republisher | None:
        """The publisher failed messages are moved with; None: one of the subscriber's own.
        Agents pass their own, so that an agent runs one publisher."""
        return None


class AsyncEventSubscriber(SubscriberFace):
    """Consumes protobuf messages from a durable queue bound to topic patterns.

    Each delivery is decoded with the class :meth:`get_message_class` names for
    its routing key and passed to :meth:`handle_message`. It is acked when the
    handler returns. Failures are retried and dead-lettered as for the sync
    :class:`messaging.EventSubscriber`. Up to ``prefetch_count`` handlers run
    at once.
    """

    def __init__(
        self,
        connection_pool: AsyncConnectionPool,
        agent_name: str,
        exchange_name: str = DEFAULT_EXCHANGE,
        queue_name: str | None = None,
        routing_keys: Sequence[str] = ("#",),
        prefetch_count: int = 1,
        **options: Unpack[SubscriberKeywords],
    ) -> None:
        self.connection_pool = connection_pool
        self._configure(
            connection_pool,
            agent_name,
            exchange_name,
            queue_name,
            routing_keys,
            prefetch_count,
            options,
        )
        self._in_hand: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._abandoned = 0
        self._deadline = Watchdog(agent_name, self.shutdown_timeout + ASYNC_GRACE)
        self._stopped: asyncio.Event | None = None
        self._pipeline: Pipeline | None = None

    @abstractmethod
    async def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        """Process one message. Raise to dead-letter it."""

    async def start(self) -> None:
        """Declare the queue and its dead-lettering, then start consuming; returns at once."""
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self._pipeline = Pipeline.open(
            self.consumer,
            self._loop,
            self._failure_publisher(),
            (*self.connection_pool.middlewares, *self.middlewares),
        )
        await self.consumer.start(self._on_delivery, inline=True)
        await self._on_started()
        hooks.subscriber_started(self.connection_pool, self)  # the health endpoint, if asked for

    async def start_consuming(self) -> None:
        """Consume until :meth:`stop`, SIGINT or SIGTERM; finishes the messages in hand.

        Raises :class:`~messaging.errors.ShutdownTimeoutError` when handlers
        were still running at the shutdown deadline (their messages went back
        to the queue), so that a process letting it propagate exits non-zero.
        If even that cannot happen (a handler blocks the event loop), a
        watchdog ends the process with status 70 a few seconds later.
        """
        await self.start()
        assert self._stopped is not None
        self._abandoned = 0
        loop = asyncio.get_running_loop()
        signals: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, lambda: loop.create_task(self.stop()))
                    signals.append(sig)
        self._deadline.arm()  # after the handlers: SIGTERM may come at once
        try:
            await self._stopped.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            self._deadline.finished()
        if self._abandoned:
            raise ShutdownTimeoutError(
                f"{self.agent_name}: {self._abandoned} handler(s) still running "
                f"{self.shutdown_timeout:g}s after shutdown began; their messages went back "
                f"to the queue"
            )

    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages, let those in hand finish, close.

        ``timeout`` (default ``shutdown_timeout``) bounds the wait; handlers
        still running then are cancelled and their messages go back to the
        queue. From the call on, the health endpoint reports not ready.
        """
        if timeout is None:
            timeout = self.shutdown_timeout
        self._stopping = True
        self._deadline.begin(timeout + ASYNC_GRACE)
        try:
            await hooks.subscriber_stopping(self.connection_pool, self)  # discovery withdraws
            await self.consumer.cancel()
            if self._in_hand:
                _, late = await asyncio.wait(set(self._in_hand), timeout=timeout)
                if late:
                    self._abandoned = len(late)
                    log.error(
                        "%s: %d handler(s) still running %.0fs after shutdown began; "
                        "cancelling them, their messages go back to the queue",
                        self.agent_name,
                        len(late),
                        timeout,
                    )
                    for task in late:
                        task.cancel()
            pipeline, self._pipeline = self._pipeline, None
            if pipeline is not None:
                await pipeline.drain()
            await self.consumer.close()
            await self._on_stopped()
            if pipeline is not None:
                await pipeline.close()
        finally:
            self._stopping = False
            if self._stopped is not None:
                self._stopped.set()

    @property
    def is_stopping(self) -> bool:
        """True from :meth:`stop` (or SIGTERM) until it has closed the consumer."""
        return self._stopping

    def _on_delivery(self, delivery: Delivery) -> None:
        # Called on the transport's reader (inline: no Task of its own); the
        # handler gets one task, started here in delivery order.
        pipeline = self._pipeline
        if pipeline is None:
            return  # stopped: unsettled, so the broker requeues it
        task = self._loop.create_task(pipeline.handle_async(delivery, self.handle_message))
        self._in_hand.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._in_hand.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The pipeline settles handler errors itself: this is a defect of ours.
            log.error("delivery pipeline failed", exc_info=task.exception())

    async def __aenter__(self) -> Self:
        """``async with``: start consuming (:meth:`start`); a send-only agent starts nothing."""
        if not self.consumer.send_only:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop (:meth:`stop`: the messages in hand finish) and close."""
        await self.stop()
