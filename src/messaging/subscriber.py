"""The README's EventSubscriber, for synchronous code.

Deliveries arrive on the IO thread, which only queues them; the thread that
called :meth:`EventSubscriber.start_consuming` decodes them and runs the
handler, one at a time in delivery order, and hands each outcome back to the
IO thread; :class:`~messaging.aio.pipeline.Pipeline` does the rest, as for the
async subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import signal
import threading
from abc import abstractmethod
from collections.abc import Coroutine, Sequence
from types import FrameType
from typing import Any, Unpack

from google.protobuf.message import Message as ProtoMessage

from messaging._portal import Portal, Started
from messaging._shutdown import Watchdog
from messaging.aio import hooks
from messaging.aio.options import SubscriberKeywords
from messaging.aio.pipeline import Pipeline
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.aio.subscriber import SubscriberFace
from messaging.connection import ConnectionPool
from messaging.transport import Delivery

log = logging.getLogger("messaging.subscriber")

_STOP = object()


class EventSubscriber(SubscriberFace):
    """Consumes protobuf messages from a durable queue bound to topic patterns.

    Subclasses give :meth:`get_message_class` and :meth:`handle_message`. A
    message is acked when the handler returns. When the handler raises, it is
    retried after each of ``retry_delays`` (waiting in a broker-side delay
    queue), then moved to ``<queue>.dlq`` (kept 24 hours) with headers saying
    why (:mod:`messaging.headers`). A body that does not decode, a routing key
    with no class, or an exception of a ``permanent_errors`` type goes to the
    DLQ at once, and so does a message redelivered more than
    ``max_redeliveries`` times (its consumers keep dying while holding it;
    ``None`` turns the count off). Every failure is logged with its
    correlation id and consuming goes on.

    ``max_length`` (messages) and ``max_length_bytes`` (bodies) bound the work
    queue; ``overflow`` says what a full queue does: ``"reject-publish"`` (the
    default) nacks new messages, so ``publish()`` raises and nothing queued is
    lost; ``"drop-head"`` makes room by dead-lettering the oldest message to
    the DLQ, and the publisher is not told
    (:func:`messaging.topology.queue_limit_arguments`).
    """

    def __init__(
        self,
        connection_pool: ConnectionPool,
        agent_name: str,
        exchange_name: str = DEFAULT_EXCHANGE,
        queue_name: str | None = None,
        routing_keys: Sequence[str] = ("#",),
        prefetch_count: int = 1,
        **options: Unpack[SubscriberKeywords],
    ) -> None:
        self.connection_pool = connection_pool
        self._configure(
            connection_pool.aio,
            agent_name,
            exchange_name,
            queue_name,
            routing_keys,
            prefetch_count,
            options,
        )
        self._portal = Portal.get()
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # deliveries, or _STOP
        self._pipeline: Pipeline | None = None
        self._stopping = threading.Event()
        self._running = threading.Event()
        self._deadline = Watchdog(agent_name, self.shutdown_timeout)
        # Replies started by the handler in hand (see _reply_in_hand), on _worker only.
        self._replies: list[Started[Any]] | None = None
        self._worker: threading.Thread | None = None

    def broker_consumer_count(self) -> int:
        """Consumers the broker itself counts on the queue."""
        return self._portal.call(self.consumer.broker_consumer_count())

    @abstractmethod
    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        """Process one message. Raise to dead-letter it."""

    # -- running -----------------------------------------------------------

    def start_consuming(self) -> None:
        """Consume until :meth:`stop`, SIGINT or SIGTERM; blocks the calling thread.

        On stop the message in hand is finished and acked first; messages
        buffered but not started go back to the queue. A handler still running
        ``shutdown_timeout`` seconds after stop ends the process with status
        70, and the broker requeues its message (:mod:`messaging._shutdown`).
        """
        self._stopping.clear()
        self._portal.call(self._start())
        self._running.set()
        restore = self._install_signal_handlers()  # first: SIGTERM may come at once
        self._deadline.arm()
        try:
            self._work()
        finally:
            restore()
            self._running.clear()
            try:
                self._shutdown()
            finally:
                self._deadline.finished()

    async def _start(self) -> None:
        self._pipeline = Pipeline.open(
            self.consumer,
            asyncio.get_running_loop(),
            self._failure_publisher(),
            (*self.connection_pool.aio.middlewares, *self.middlewares),
            run_on_loop=self._portal.call,
        )
        # _on_delivery only queues: called on the reader, no Task per delivery.
        await self.consumer.start(self._on_delivery, inline=True)
        await self._on_started()
        hooks.subscriber_started(self.connection_pool.aio, self)  # health endpoint, if asked

    def stop(self) -> None:
        """Ask :meth:`start_consuming` to return. Safe from any thread, a handler or a signal.

        From now on the health endpoint reports not ready, and the shutdown
        deadline (``shutdown_timeout``) runs.
        """
        self._stopping.set()
        self._deadline.begin()
        self._inbox.put(_STOP)

    @property
    def is_stopping(self) -> bool:
        """True from :meth:`stop` (or SIGTERM) until :meth:`start_consuming` has returned."""
        return self._stopping.is_set() and self._running.is_set()

    def _work(self) -> None:
        self._worker = threading.current_thread()
        inbox, pipeline = self._inbox, self._pipeline
        assert pipeline is not None
        # Acks wait while more deliveries are already here, up to half the
        # prefetch window: the broker keeps sending, and one multiple=True ack
        # settles the batch. An idle worker acks at once.
        batch = max(1, self.consumer.prefetch_count // 2)
        while not self._stopping.is_set():
            try:
                delivery = inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            if delivery is _STOP:
                break
            if not pipeline.is_current(delivery):
                continue  # its channel is gone; the broker has requeued it
            replies: list[Started[Any]] = []
            self._replies = replies
            try:
                error = pipeline.handle(delivery, self.handle_message)
            finally:
                self._replies = None
            wake = error is not None or inbox.empty() or pipeline.handed_over >= batch
            pipeline.settle_threadsafe(delivery, error, wake=wake, after=replies)

    def _reply_in_hand(self, reply: Coroutine[Any, Any, Any]) -> bool:
        """Send ``reply`` without waiting, if a handler of ours is running on this
        thread: the message in hand is then settled once the reply is sent
        (failed if it failed). False (``reply`` untouched): the caller waits."""
        replies = self._replies
        if replies is None or threading.current_thread() is not self._worker:
            return False
        replies.append(self._portal.start(reply))
        return True

    def _on_delivery(self, delivery: Delivery) -> None:
        pipeline = self._pipeline
        if pipeline is not None and pipeline.admit(delivery):
            self._inbox.put(delivery)

    def _shutdown(self) -> None:
        async def finish() -> None:
            await hooks.subscriber_stopping(self.connection_pool.aio, self)  # discovery withdraws
            await self.consumer.cancel()
            pipeline, self._pipeline = self._pipeline, None
            if pipeline is not None:
                await pipeline.drain()
            # Closing the channel hands buffered, unstarted deliveries back to the queue.
            await self.consumer.close()
            await self._on_stopped()
            if pipeline is not None:
                await pipeline.close()

        self._portal.call(finish())
        while True:  # forget what was buffered: the broker has it again
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break
        log.info("%s stopped consuming %s", self.agent_name, self.queue_name)

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # No logging here: the interrupted code may hold the logging lock.
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
