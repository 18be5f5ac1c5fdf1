"""How deliveries are settled: acks batched into ``multiple=True`` where that is safe.

A ``multiple=True`` ack settles every unacked tag up to the one named, so it
may only be sent when every one of them was handled. The two settlers below
know when that holds: the sync subscriber's single worker handles tags in
order; the async subscriber's handlers finish in any order and the window
tracks which tags are still open.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from messaging.aio.consumer import Consumer
from messaging.transport import Delivery


@dataclass(frozen=True)
class Outcome:
    delivery_tag: int
    generation: int
    ok: bool
    delivery: Delivery | None = None
    error: BaseException | None = None


class Settler:
    """Carries outcomes from the handler thread to the event loop, a batch per wake-up.

    The sync subscriber's single worker handles deliveries one at a time in
    delivery order, so every tag below a settled one is settled too and a run
    of acks can go as one ``multiple=True`` ack; except while a failed message
    is still being moved to its retry or dead-letter queue, whose tag must
    stay unacked until the copy is confirmed.
    """

    def __init__(self, consumer: Consumer, loop: asyncio.AbstractEventLoop) -> None:
        self._consumer = consumer
        self._loop = loop
        self._pending: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._failing: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def put(self, outcome: Outcome, *, wake: bool = True) -> None:
        """Record an outcome; callable from any thread.

        ``wake=False`` leaves it for a later flush: the caller knows more
        outcomes follow soon (its inbox is not empty), so they can share one
        wake-up of the loop and one ``multiple=True`` ack.
        """
        self._pending.append(outcome)
        if not wake:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """Send what is pending. Runs on the loop."""
        with self._lock:
            self._scheduled = False
        pending = self._pending
        channel = self._consumer.channel
        run_tag: int | None = None
        run_generation = -1
        while pending:
            outcome = pending.popleft()
            if outcome.ok:
                if self._failing:
                    channel.ack(outcome.delivery_tag, outcome.generation)
                    continue
                if run_tag is not None and run_generation != outcome.generation:
                    channel.ack(run_tag, run_generation, multiple=True)
                run_tag, run_generation = outcome.delivery_tag, outcome.generation
                continue
            if run_tag is not None:
                channel.ack(run_tag, run_generation, multiple=True)
                run_tag = None
            assert outcome.delivery is not None
            assert outcome.error is not None
            self.track(self._consumer.fail(outcome.delivery, outcome.generation, outcome.error))
        if run_tag is not None:
            channel.ack(run_tag, run_generation, multiple=True)

    def track(self, moving: Coroutine[Any, Any, None]) -> None:
        """Run ``moving`` (a message being moved) on the loop; acks stay single meanwhile."""
        task = self._loop.create_task(moving)
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)

    async def drain(self) -> None:
        """Flush, then wait for failed messages still being moved."""
        self.flush()
        if self._failing:
            await asyncio.wait(set(self._failing))
        await asyncio.sleep(0)  # let the ack frames reach the write queue


class AckWindow:
    """The async subscriber's acks, coalesced into ``multiple=True`` acks once per loop turn.

    Handlers run concurrently and finish in any order, so an ack with
    ``multiple=True`` may only cover a run of tags, from the oldest one not
    yet settled, that all ended well. A tag still in hand, failed and being
    moved, or whose handler was cancelled stays open and stops the run; the
    successes after it are acked one by one in the same turn, so no ack waits
    on a slow handler. Open tags are never covered: only :meth:`forget`
    removes one, and only once it was settled some other way.
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

    def done(self, tag: int, generation: int) -> None:
        """The handler of ``tag`` returned: ack it (in this loop turn)."""
        if generation != self._generation or tag not in self._open:
            return  # its channel is gone; the broker has requeued it
        self._open[tag] = True
        if not self._scheduled:
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
        channel = self._consumer.channel
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
