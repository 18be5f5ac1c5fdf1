"""An async setup step that runs once, however many callers arrive at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Once:
    """Runs ``step`` the first time it is awaited; later callers wait for that run.

    If the step fails, every waiting caller gets its error and the next call
    tries again. Once it succeeded, a call costs one attribute check.
    """

    def __init__(self, step: Callable[[], Awaitable[None]]) -> None:
        self._step = step
        self._done: asyncio.Future[None] | None = None

    async def __call__(self) -> None:
        done = self._done
        if done is not None:  # a failed run resets it, so this one ran or runs well
            if not done.done():
                await asyncio.shield(done)
            return
        done = self._done = asyncio.get_running_loop().create_future()
        try:
            await self._step()
        except BaseException as exc:
            self._done = None
            done.set_exception(exc)
            done.exception()  # retrieved: this caller re-raises it
            raise
        done.set_result(None)
