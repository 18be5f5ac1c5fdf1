"""Once: an async setup step run once for any number of concurrent callers."""

from __future__ import annotations

import asyncio

import pytest

from messaging.aio.once import Once


def test_concurrent_callers_share_one_run() -> None:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)

    async def scenario() -> None:
        once = Once(step)
        await asyncio.gather(*(once() for _ in range(10)))
        await once()

    asyncio.run(scenario())
    assert runs == 1


def test_a_failure_reaches_the_waiters_and_the_next_call_retries() -> None:
    attempts = 0

    async def step() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise RuntimeError("broker said no")

    async def scenario() -> list[BaseException | None]:
        once = Once(step)
        first = await asyncio.gather(once(), once(), return_exceptions=True)
        await once()
        await once()
        return list(first)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert attempts == 2


def test_cancelling_a_waiter_does_not_cancel_the_run() -> None:
    async def step() -> None:
        await asyncio.sleep(0.05)

    async def scenario() -> None:
        once = Once(step)
        runner = asyncio.ensure_future(once())
        waiter = asyncio.ensure_future(once())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await runner

    asyncio.run(scenario())
