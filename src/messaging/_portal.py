"""The process's IO thread: one event loop that owns all AMQP I/O for sync callers.

Sync code never touches the network itself. It submits coroutines to this loop
and waits for their results, so heartbeats and confirms keep flowing while a
handler runs for minutes on the caller's thread (a blocking client would run
heartbeats on that same thread and lose its connection).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Portal:
    _instance: Portal | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name="messaging-io", daemon=True)
        self._thread.start()

    @classmethod
    def get(cls) -> Portal:
        """The process's portal, started on first use."""
        portal = cls._instance
        if portal is None:
            with cls._instance_lock:
                portal = cls._instance
                if portal is None:
                    portal = cls._instance = Portal()
        return portal

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_io_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def start(self, coro: Coroutine[Any, Any, T]) -> Started[T]:
        """Start ``coro`` on the IO loop and return at once; the loop may wait on it."""
        started = Started(self.loop, coro)
        self.loop.call_soon_threadsafe(started.begin)
        return started

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the IO loop and wait for its result on this thread.

        Every sync publish and request waits here, so it is kept lean: one
        ``call_soon_threadsafe`` and one lock, not ``run_coroutine_threadsafe``'s
        chained futures (bench: a trivial call 75 -> 45 µs of CPU).
        """
        if self.in_io_thread():
            coro.close()
            raise RuntimeError(
                "a blocking messaging call was made on the IO thread itself (from an async "
                "callback?); use messaging.aio from async code"
            )
        waiter: _Waiter[T] = _Waiter(self.loop, coro)
        self.loop.call_soon_threadsafe(waiter.start)
        return waiter.wait(timeout)


class _Waiter(Generic[T]):
    """One coroutine run on the loop for a thread that blocks until it is done."""

    __slots__ = ("_coro", "_done", "_error", "_loop", "_result", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> None:
        self._loop = loop
        self._coro = coro
        self._done = threading.Lock()
        self._done.acquire()  # released once the task is done
        self._task: asyncio.Task[T] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None

    def start(self) -> None:  # on the loop
        try:
            self._task = self._loop.create_task(self._coro)
        except BaseException as exc:  # the loop is closing: let the caller know
            self._coro.close()
            self._error = exc
            self._done.release()
            raise
        self._task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[T]) -> None:  # on the loop
        if task.cancelled():
            self._error = concurrent.futures.CancelledError()
        elif (error := task.exception()) is not None:
            self._error = error
        else:
            self._result = task.result()
        self._done.release()

    def wait(self, timeout: float | None) -> T:
        try:
            if not self._done.acquire(timeout=-1 if timeout is None else timeout):
                self._cancel()
                raise TimeoutError(f"no result within {timeout}s")
        except KeyboardInterrupt:
            self._cancel()
            raise
        if self._error is not None:
            error, self._error = self._error, None  # no reference cycle through the traceback
            raise error
        return cast(T, self._result)

    def _cancel(self) -> None:
        def cancel() -> None:
            if self._task is not None:
                self._task.cancel()

        self._loop.call_soon_threadsafe(cancel)


class Started(Generic[T]):
    """A coroutine started on the loop by another thread that does not wait for it.

    Callbacks queued from one thread run on the loop in the order they were
    queued, so a callback queued after :meth:`Portal.start` finds :attr:`task`.
    """

    __slots__ = ("_coro", "_loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> None:
        self._loop = loop
        self._coro = coro
        self.task: asyncio.Task[T] | None = None

    def begin(self) -> None:  # on the loop
        self.task = self._loop.create_task(self._coro)
