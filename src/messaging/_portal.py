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
from typing import Any, TypeVar

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

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the IO loop and wait for its result on this thread."""
        if self.in_io_thread():
            coro.close()
            raise RuntimeError(
                "a blocking messaging call was made on the IO thread itself (from an async "
                "callback?); use messaging.aio from async code"
            )
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except KeyboardInterrupt:
            future.cancel()
            raise
