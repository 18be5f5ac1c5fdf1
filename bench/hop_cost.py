"""What a sync caller pays to get a coroutine run: a hop to the IO thread, or a lent loop.

The sync API runs every coroutine on the process's IO thread (``Portal.call``):
two thread wake-ups per call. The alternative lends the event loop to the
blocked caller, which then runs it itself until its result is there (built,
measured on the bench rows and dropped: bench/README.md, "Lending the loop").
This times both with a trivial coroutine, ``--calls`` times each:

- ``Portal.call``: the bus's own hop, IO thread on uvloop as in the library;
- the loop lent to the caller: ``run_forever`` on the caller's thread until the
  coroutine's task is done, for uvloop and the stock asyncio loop, from the
  main thread and from another thread (uvloop sets up signal handling when it
  runs on the main thread).

Wall and CPU (whole process) µs per call. Nothing here touches a broker.

    .venv/bin/python bench/hop_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable

import uvloop

from messaging._portal import Portal


async def _trivial() -> int:
    return 1


def _timed(calls: int, once: Callable[[], object]) -> tuple[float, float]:
    once()  # warm up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        once()
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


def _portal_call(calls: int) -> tuple[float, float]:
    portal = Portal.get()
    return _timed(calls, lambda: portal.call(_trivial()))


def _lent_loop(calls: int, loop: asyncio.AbstractEventLoop) -> tuple[float, float]:
    def once() -> int:
        task = loop.create_task(_trivial())
        task.add_done_callback(lambda _: loop.stop())
        loop.run_forever()
        return task.result()

    try:
        return _timed(calls, once)
    finally:
        loop.close()


def _on_another_thread(measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    result: list[tuple[float, float]] = []
    thread = threading.Thread(target=lambda: result.append(measure()))
    thread.start()
    thread.join()
    return result[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    n = args.calls
    rows = [
        ("Portal.call (hop to the IO thread and back)", _portal_call(n)),
        ("loop lent to the caller, uvloop, main thread", _lent_loop(n, uvloop.new_event_loop())),
        (
            "loop lent to the caller, uvloop, other thread",
            _on_another_thread(lambda: _lent_loop(n, uvloop.new_event_loop())),
        ),
        ("loop lent to the caller, asyncio, main thread", _lent_loop(n, asyncio.new_event_loop())),
        (
            "loop lent to the caller, asyncio, other thread",
            _on_another_thread(lambda: _lent_loop(n, asyncio.new_event_loop())),
        ),
    ]
    print(f"| way ({n:,} trivial calls) | wall µs/call | CPU µs/call |")
    print("| --- | --- | --- |")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
