"""What happens to every delivery of a subscriber, whichever API runs its handler.

One :class:`Pipeline` per running subscriber, in this order for each delivery:

1. :meth:`Pipeline.admit` (on the event loop, as the delivery arrives): drop
   it if its channel is already gone (the broker has requeued it), open its
   tag in the :class:`AckWindow`, and hand a redelivered message to the
   redelivery count (:mod:`messaging.aio.failures`) instead of the handler.
2. :meth:`Pipeline.handle` or :meth:`Pipeline.handle_async` (on the thread or
   task that runs the handler): an :class:`~messaging.aio.envelope.Envelope`
   (:mod:`messaging.aio.incoming`) goes through the steps, outermost first:
   :class:`~messaging.aio.telemetry.Telemetry` (metrics, log context, trace
   span), :class:`~messaging.aio.deadline.Deadline` (a request past its caller's
   deadline is acked unhandled), :class:`~messaging.aio.codec.Decode`, the user's middlewares
   (:mod:`messaging.aio.middleware`), and reaches the handler.
3. :meth:`Pipeline.settle` (on the loop): a success goes to the ack window; a
   failure to the failure router, which moves the message and settles it
   itself. The sync API hands outcomes over with :meth:`Pipeline.settle_threadsafe`,
   a batch per wake-up of the loop.

The async subscriber runs step 2 as a task per delivery on the loop; the sync
one on the thread that called ``start_consuming``, one message at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message as ProtoMessage

from messaging.aio.codec import Decode
from messaging.aio.consumer import Consumer
from messaging.aio.deadline import Deadline
from messaging.aio.envelope import Envelope
from messaging.aio.failures import FailureRouter, Republisher
from messaging.aio.incoming import delivery_properties
from messaging.aio.middleware import ConsumeChain, Middleware, RunOnLoop
from messaging.aio.publisher import AsyncEventPublisher
from messaging.aio.telemetry import Telemetry
from messaging.transport import Delivery

log = logging.getLogger("messaging.subscriber")

_UNDECODED = Empty()
"""``Envelope.message`` until the decoding step replaces it (before any user middleware)."""

SyncHandler = Callable[[ProtoMessage, dict[str, Any]], None]
AsyncHandler = Callable[[ProtoMessage, dict[str, Any]], Awaitable[None]]


class Started(Protocol):
    """Work another thread started on the loop (``messaging._portal.Started``)."""

    @property
    def task(self) -> asyncio.Future[Any] | None: ...


class AckWindow:
    """Acks, coalesced into ``multiple=True`` acks once per loop turn.

    A ``multiple=True`` ack settles every unacked tag up to the one named, so
    it may only cover a run of tags, from the oldest one not yet settled, that
    all ended well. Handlers may finish in any order (the async API runs
    several at once; the sync API finishes them in order, a special case). A
    tag still in hand, failed and being moved, or whose handler was cancelled
    stays open and stops the run; the successes after it are acked one by one
    in the same turn, so no ack waits on a slow handler. Open tags are never
    covered: only :meth:`forget` removes one, once it was settled some other way.
    """

    def __init__(self, consumer: Consumer, loop: asyncio.AbstractEventLoop) -> None:
        self._consumer = consumer
        self._loop = loop
        self._generation = -1
        # delivery tag -> handled ok; in delivery (= tag) order
        self._open: dict[int, bool] = {}
        self._scheduled = False

    def delivered(self, tag: int, generation: int) -> None:
        if generation != self._generation:
            # A new channel: the old one's tags were requeued by the broker.
            self._open.clear()
            self._generation = generation
        self._open[tag] = False

    def done(self, tag: int, generation: int, *, flush_soon: bool = True) -> None:
        """The handler of ``tag`` returned: ack it (in this loop turn)."""
        if generation != self._generation or tag not in self._open:
            return  # its channel is gone; the broker has requeued it
        self._open[tag] = True
        if flush_soon and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def forget(self, tag: int, generation: int) -> None:
        """``tag`` was acked or rejected on its own (moved, dead-lettered)."""
        if generation == self._generation:
            self._open.pop(tag, None)

    def flush(self) -> None:
        self._scheduled = False
        open_ = self._open
        if not open_:
            return
        channel = self._consumer.open_channel
        if channel is None:
            open_.clear()
            return
        generation = self._generation
        run_end: int | None = None
        for tag, ok in open_.items():
            if not ok:
                break
            run_end = tag
        if run_end is not None:
            for tag in [t for t in open_ if t <= run_end]:
                del open_[tag]
            channel.ack(run_end, generation, multiple=True)
        stragglers = [tag for tag, ok in open_.items() if ok]
        for tag in stragglers:
            del open_[tag]
            channel.ack(tag, generation)


class Pipeline:
    """One subscriber's per-delivery work, shared by the sync and the async API."""

    def __init__(
        self,
        consumer: Consumer,
        failures: FailureRouter,
        loop: asyncio.AbstractEventLoop,
        steps: ConsumeChain,
    ) -> None:
        self.consumer = consumer
        self.steps = steps
        self.failures = failures
        self.loop = loop
        self.acks = AckWindow(consumer, loop)
        self._moving: set[asyncio.Task[None]] = set()
        self._handoff: deque[tuple[Delivery, BaseException | None, Sequence[Started]]] = deque()
        self._replying: set[asyncio.Future[None]] = set()
        self._handoff_lock = threading.Lock()
        self._handoff_scheduled = False
        self._own_publisher: AsyncEventPublisher | None = None

    @classmethod
    def open(
        cls,
        consumer: Consumer,
        loop: asyncio.AbstractEventLoop,
        publisher: Republisher | None = None,
        middlewares: Sequence[Middleware] = (),
        run_on_loop: RunOnLoop | None = None,
    ) -> Pipeline:
        """A pipeline whose failures go out on ``publisher`` (an agent's own), or on a
        publisher of its own, closed with it, when none is given.

        Each delivery runs through the bus's own steps (telemetry, then decoding),
        then ``middlewares`` (the pool's and the subscriber's), then the handler.
        ``run_on_loop``: for the sync API, how an async-only middleware's steps run.
        """
        own = None
        if publisher is None:
            own = AsyncEventPublisher(
                consumer.pool, consumer.agent_name, consumer.exchange_name, declare=consumer.declare
            )
            publisher = own
        steps = ConsumeChain(
            (
                Telemetry(consumer.agent_name, consumer.queue_name, consumer.metrics),
                Deadline(consumer.agent_name, consumer.metrics),
                Decode(consumer.agent_name, consumer.message_class, consumer.accepted_types),
                *middlewares,
            ),
            run_on_loop,
        )
        pipeline = cls(consumer, FailureRouter(consumer, publisher), loop, steps)
        pipeline._own_publisher = own
        return pipeline

    # -- 1. as a delivery arrives (on the loop) ----------------------------

    def admit(self, delivery: Delivery) -> bool:
        """True when the handler should run for ``delivery``."""
        generation = delivery.generation
        if generation < 0:
            return False  # its channel is gone; the broker has requeued it
        self.acks.delivered(delivery.delivery_tag, generation)
        if delivery.redelivered and self.consumer.counts_redeliveries:
            self._move(self.failures.recount(delivery), delivery)
            return False
        return True

    def is_current(self, delivery: Delivery) -> bool:
        """False once the channel ``delivery`` came on was replaced (it was requeued)."""
        return delivery.generation == self.consumer.generation

    # -- 2. the handler (where the API runs it) ----------------------------

    def handle(self, delivery: Delivery, handler: SyncHandler) -> BaseException | None:
        """Run the steps and a sync handler for ``delivery`` on this thread; returns the
        error that fails it, if any."""
        try:
            self.steps.run(self._envelope(delivery), handler)
        except Exception as exc:
            return exc
        return None

    async def handle_async(self, delivery: Delivery, handler: AsyncHandler) -> None:
        """Admit, run the steps and an async handler, and settle, on the loop (one task
        per delivery)."""
        if not self.admit(delivery):
            return
        try:
            await self.steps.run_async(self._envelope(delivery), handler)
        except Exception as exc:
            self.settle(delivery, exc)
        else:
            self.settle(delivery, None)

    def _envelope(self, delivery: Delivery) -> Envelope:
        consumer = self.consumer
        return Envelope(
            _UNDECODED,
            delivery_properties(delivery),
            consumer.agent_name,
            consumer.queue_name,
            delivery.body,
            wire=delivery.properties,
        )

    # -- 3. the outcome (on the loop) --------------------------------------

    def settle(self, delivery: Delivery, error: BaseException | None) -> None:
        if error is None:
            self.acks.done(delivery.delivery_tag, delivery.generation)
        else:
            self._move(self.failures.fail(delivery, error), delivery)

    def settle_threadsafe(
        self,
        delivery: Delivery,
        error: BaseException | None,
        *,
        wake: bool = True,
        after: Sequence[Started] = (),
    ) -> None:
        """:meth:`settle` from another thread.

        ``wake=False`` leaves the outcome for a later wake-up: the caller knows
        more follow soon, so they can share one wake-up of the loop and one
        ``multiple=True`` ack. ``after``: replies the handler started and did
        not wait for; ``delivery`` is settled once they are sent, as a failure
        if one of them failed (as if the handler had raised it).
        """
        self._handoff.append((delivery, error, after))
        if not wake:
            return
        with self._handoff_lock:
            if self._handoff_scheduled:
                return
            self._handoff_scheduled = True
        self.loop.call_soon_threadsafe(self._take_handoff)

    @property
    def handed_over(self) -> int:
        """Outcomes handed over and not yet taken by the loop."""
        return len(self._handoff)

    def _take_handoff(self) -> None:
        with self._handoff_lock:
            self._handoff_scheduled = False
        handoff = self._handoff
        while handoff:
            delivery, error, after = handoff.popleft()
            if after and error is None:
                self._settle_after(delivery, after)
            elif error is None:
                self.acks.done(delivery.delivery_tag, delivery.generation, flush_soon=False)
            else:
                self._move(self.failures.fail(delivery, error), delivery)
        self.acks.flush()

    def _settle_after(self, delivery: Delivery, after: Sequence[Started]) -> None:
        """Settle ``delivery`` once every reply in ``after`` is done."""
        replies = [started.task for started in after if started.task is not None]
        if len(replies) < len(after):
            # A wake-up queued before the reply was started took this outcome:
            # the reply's start is already queued, so this runs after it.
            self.loop.call_soon(self._settle_after, delivery, after)
            return
        waiting = [reply for reply in replies if not reply.done()]
        if not waiting:
            self._settle_replied(delivery, replies)
            return
        remaining = len(waiting)

        def one_done(_: asyncio.Future[Any]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self._replying.discard(gate)
                self._settle_replied(delivery, replies)
                gate.set_result(None)

        gate: asyncio.Future[None] = self.loop.create_future()  # what drain() waits for
        self._replying.add(gate)
        for reply in waiting:
            reply.add_done_callback(one_done)

    def _settle_replied(self, delivery: Delivery, replies: list[asyncio.Future[Any]]) -> None:
        if any(reply.cancelled() for reply in replies):
            return  # left unsettled: the broker requeues it when the channel closes
        errors = [e for e in (reply.exception() for reply in replies) if e is not None]
        self.settle(delivery, errors[0] if errors else None)

    def _move(self, moving: Coroutine[Any, Any, None], delivery: Delivery) -> None:
        """Run a failure route for ``delivery``; its tag stays open until it is settled."""
        task = self.loop.create_task(moving)
        self._moving.add(task)

        def moved(task: asyncio.Task[None]) -> None:
            self._moving.discard(task)
            if task.cancelled():
                return  # left unsettled: the broker requeues it when the channel closes
            error = task.exception()
            if error is not None:
                log.error(
                    "%s: moving message %s failed: %s; it stays unacked until the channel "
                    "closes, then the broker redelivers it",
                    self.consumer.agent_name,
                    delivery.properties.message_id,
                    repr(error),  # as text: the exception's frames hold the delivery
                )
                return  # its tag stays open, so no multiple=True ack covers it
            self.acks.forget(delivery.delivery_tag, delivery.generation)

        task.add_done_callback(moved)

    async def drain(self) -> None:
        """Settle what was handed over, ack what is done, wait for messages being moved."""
        self._take_handoff()
        await asyncio.sleep(0)  # replies started just before their outcome came
        if self._replying:
            await asyncio.wait(set(self._replying))
        if self._moving:
            await asyncio.wait(set(self._moving))
        self.acks.flush()

    async def close(self) -> None:
        """Close the publisher this pipeline made for itself (after :meth:`drain`)."""
        own, self._own_publisher = self._own_publisher, None
        if own is not None:
            await own.close()
