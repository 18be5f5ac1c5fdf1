"""The IO thread's hand-over: results, errors, cancellation and start order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

from messaging._portal import Portal


@pytest.fixture(scope="module")
def portal() -> Portal:
    return Portal()  # a loop thread of its own, not the process's shared one


def test_call_returns_the_result_and_raises_the_error(portal: Portal) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async def fail() -> None:
        raise KeyError("nope")

    assert portal.call(double(21)) == 42
    with pytest.raises(KeyError, match="nope"):
        portal.call(fail())


def test_a_call_that_times_out_cancels_its_coroutine(portal: Portal) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        portal.call(forever(), timeout=0.05)
    assert cancelled.wait(5), "the coroutine still runs after its caller gave up"


def test_cancelling_a_submitted_future_cancels_its_coroutine(portal: Portal) -> None:
    running, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        running.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    future = portal.submit(forever())
    assert running.wait(5)
    assert future.cancel()
    assert cancelled.wait(5)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(1)


def test_work_from_one_thread_starts_in_order_and_many_threads_get_their_own(
    portal: Portal,
) -> None:
    started: dict[int, list[int]] = {t: [] for t in range(8)}

    async def record(thread: int, i: int) -> tuple[int, int]:
        started[thread].append(i)  # before the first await: start order
        await asyncio.sleep(0)
        return thread, i

    def burst(thread: int) -> list[tuple[int, int]]:
        futures = [portal.submit(record(thread, i)) for i in range(200)]
        futures.append(concurrent.futures.Future())
        futures[-1].set_result(portal.call(record(thread, 200)))
        return [f.result(10) for f in futures]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(burst, range(8)))
    for thread, got in enumerate(results):
        assert got == [(thread, i) for i in range(201)]
        assert started[thread] == list(range(201))


def test_a_blocking_call_from_the_io_thread_is_refused(portal: Portal) -> None:
    async def inner() -> int:
        return 1

    async def outer() -> None:
        portal.call(inner())

    with pytest.raises(RuntimeError, match="IO thread itself"):
        portal.call(outer())


def test_start_does_not_wait(portal: Portal) -> None:
    release = threading.Event()

    async def slow() -> str:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 5)
        return "done"

    t0 = time.monotonic()
    started = portal.start(slow())
    assert time.monotonic() - t0 < 1.0
    release.set()
    assert portal.call(asyncio.sleep(0, "next")) == "next"
    deadline = time.monotonic() + 5
    while (started.task is None or not started.task.done()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started.task is not None
    assert started.task.result() == "done"
