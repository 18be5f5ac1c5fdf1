"""Work rows and the implementations registered for them.

An implementation module (``bench/impl_*.py``) registers one function per row it
can do, all with the same signature::

    @register("pika", "consume100", "consume1")
    def consume(ctx: BenchContext) -> Sample: ...

    @register_async("aiormq", "publish")          # also registers "aiormq+uvloop"
    async def publish(ctx: BenchContext) -> Sample: ...

The worker declares the topology (and pre-fills the queue for consume rows)
before calling the function, and deletes it afterwards; the function only does
the timed work on ``ctx.exchange`` / ``ctx.queue``. An implementation whose
topology differs (the bus declares its own queues with dead-letter arguments)
passes ``prepare=`` / ``cleanup=``.

To add an implementation, write ``bench/impl_<name>.py`` and list it in
:data:`IMPL_MODULES`; a module that cannot be imported (its library missing) is
reported as unavailable and skipped.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common import WORKER_DEADLINE_S, BenchContext, Sample, declare, delete, prefill

SyncWork = Callable[[BenchContext], Sample]
AsyncWork = Callable[[BenchContext], Awaitable[Sample]]
Hook = Callable[[BenchContext], None]

# Modules imported by load_all(), in table order. Bus modules go last.
IMPL_MODULES: tuple[str, ...] = (
    "impl_pika",
    "impl_aiopika",
    "impl_aiormq",
    "impl_amqplib",
    "impl_bus",
    "impl_bus_aio",
    "impl_bus_soak",
)

SOAK_DEADLINE_S = 3600.0  # the soak row runs outside the per-row deadline


@dataclass(frozen=True)
class Row:
    """One line of DESIGN.md's "What good is measured against" table."""

    name: str
    kind: str  # "publish" | "consume" | "rpc" | "stream" | "soak"
    prefetch: int
    default_messages: int
    description: str
    deadline_s: float = WORKER_DEADLINE_S

    @property
    def latency(self) -> bool:
        return self.kind == "rpc"


ROWS: dict[str, Row] = {
    r.name: r
    for r in (
        Row("publish", "publish", 0, 3_000, "confirmed publish, topic exchange bound to a queue"),
        Row("consume100", "consume", 100, 10_000, "consume + ack, prefetch 100, pre-filled queue"),
        Row("consume1", "consume", 1, 3_000, "consume + ack, prefetch 1, pre-filled queue"),
        Row("rpc", "rpc", 0, 1_000, "request/response round trip, sequential, direct reply-to"),
        Row(
            "stream",
            "stream",
            0,
            3_000,
            "replies per second: N streamed to one request, against N request/reply round trips",
        ),
        Row(
            "soak",
            "soak",
            100,
            1_000_000,
            "RSS over N consumed and N/10 requests (1 % timing out)",
            deadline_s=SOAK_DEADLINE_S,
        ),
    )
}


def default_prepare(ctx: BenchContext) -> None:
    declare(ctx)
    if ROWS[ctx.work].kind == "consume":
        prefill(ctx, ctx.messages)


@dataclass(frozen=True)
class Impl:
    name: str
    run: SyncWork
    raw: bool  # a raw client (the yardstick) rather than the bus
    prepare: Hook = default_prepare
    cleanup: Hook = delete
    anchor: bool = False  # the cross-language anchor (Node amqplib): its own ratio column


# row name -> implementation name -> Impl, in registration order
REGISTRY: dict[str, dict[str, Impl]] = {name: {} for name in ROWS}


def _add(impl: Impl, rows: tuple[str, ...]) -> None:
    for row in rows:
        if row not in ROWS:
            raise KeyError(f"unknown work row {row!r}; rows are {sorted(ROWS)}")
        if impl.name in REGISTRY[row]:
            raise KeyError(f"{impl.name!r} registered twice for {row!r}")
        REGISTRY[row][impl.name] = impl


def register(
    name: str,
    *rows: str,
    raw: bool = True,
    prepare: Hook = default_prepare,
    cleanup: Hook = delete,
    anchor: bool = False,
) -> Callable[[SyncWork], SyncWork]:
    """Register a blocking work function for the given rows.

    ``anchor=True`` (with ``raw=False``) marks the cross-language anchor: it is
    not a raw Python client, so never "best raw", and gets a ratio column of its own.
    """

    def deco(fn: SyncWork) -> SyncWork:
        _add(Impl(name, fn, raw, prepare, cleanup, anchor), rows)
        return fn

    return deco


def run_on_loop(fn: AsyncWork, ctx: BenchContext, *, use_uvloop: bool) -> Sample:
    """Run one async work function on a fresh asyncio (or uvloop) event loop."""
    if use_uvloop:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_awaited(fn, ctx))
    with asyncio.Runner() as runner:
        return runner.run(_awaited(fn, ctx))


async def _awaited(fn: AsyncWork, ctx: BenchContext) -> Sample:
    return await fn(ctx)


def register_async(
    name: str,
    *rows: str,
    raw: bool = True,
    uvloop: bool = True,
    prepare: Hook = default_prepare,
    cleanup: Hook = delete,
) -> Callable[[AsyncWork], AsyncWork]:
    """Register an async work function; with uvloop=True also as ``<name>+uvloop``."""

    def deco(fn: AsyncWork) -> AsyncWork:
        def on_asyncio(ctx: BenchContext) -> Sample:
            return run_on_loop(fn, ctx, use_uvloop=False)

        _add(Impl(name, on_asyncio, raw, prepare, cleanup), rows)
        if uvloop and importlib.util.find_spec("uvloop") is not None:

            def on_uvloop(ctx: BenchContext) -> Sample:
                return run_on_loop(fn, ctx, use_uvloop=True)

            _add(Impl(f"{name}+uvloop", on_uvloop, raw, prepare, cleanup), rows)
        return fn

    return deco


def load_all() -> dict[str, str]:
    """Import every implementation module; returns {module: why unavailable}."""
    unavailable: dict[str, str] = {}
    for module in IMPL_MODULES:
        if importlib.util.find_spec(module) is None:
            unavailable[module] = "not written yet"
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            unavailable[module] = f"cannot import: {exc}"
    return unavailable
