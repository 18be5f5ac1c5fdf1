"""Middlewares: code that runs around every message a subscriber handles or a publisher sends.

A middleware subclasses :class:`Middleware` and overrides what it needs::

    class RequireToken(Middleware):
        def consume(self, envelope):
            if envelope.headers.get("x-token") != TOKEN:
                raise RejectedMessageError("no valid x-token")   # to the DLQ, no retries
            yield                                   # the handler (and inner middlewares) run here

    class StampTenant(Middleware):
        def publish(self, outgoing):
            outgoing.headers["x-tenant"] = TENANT

``consume`` is a generator, as with :func:`contextlib.contextmanager`: what
comes before ``yield`` runs before the handler, what comes after runs once it
returned, and a failure of the handler is raised at the ``yield`` (catch it to
turn it into a success, or let it go on). A middleware that raises fails the
message as a handler would (retried, then dead-lettered; at once for
:class:`~messaging.errors.RejectedMessageError` and ``permanent_errors``).
One that returns without yielding ends the message there: it is acked and the
handler does not run (how :class:`~messaging.idempotency.Idempotent` skips a
duplicate). A plain function (no ``yield``) is a check that runs before.

``consume_async`` is the same as an async generator, for the asyncio API. A
sync subscriber drives it on the event loop (one thread crossing each step);
an async subscriber runs a sync ``consume`` on the loop, so it must not block.
Define both when both APIs use it and the sync form would block.

``publish`` runs when a message is prepared (on the thread that publishes,
before anything is sent); raising refuses the publish (nothing is sent, the
caller gets the error). ``publish_async`` runs on the event loop just before
the send. Neither sees the copies the bus itself makes to retry or
dead-letter a message, which go out as they came in.

Middlewares are attached to a connection pool (every publisher and
subscriber of the pool), to a subscriber or agent (``middlewares=[...]`` or
:meth:`use`), or to a publisher; they run in that order, outermost first, and
are fixed when a subscriber starts consuming.
"""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from typing import Any, TypeVar

from google.protobuf.message import Message as ProtoMessage

from messaging.aio.envelope import Envelope, Outgoing
from messaging.errors import ConfigurationError

_T = TypeVar("_T")

ConsumeStep = Generator[None, None, None]
AsyncConsumeStep = AsyncGenerator[None, None]
RunOnLoop = Callable[[Coroutine[Any, Any, Any]], Any]
"""Runs a coroutine on the event loop and returns its result (the sync API's portal)."""


class Middleware:
    """Base class of middlewares: override any of the four methods (the defaults do nothing)."""

    def consume(self, envelope: Envelope) -> ConsumeStep | None:
        """Around the handler, for the sync API (and the asyncio one, on the loop)."""
        return None

    def consume_async(self, envelope: Envelope) -> AsyncConsumeStep | None:
        """Around the handler, for the asyncio API: an async generator."""
        return None

    def publish(self, outgoing: Outgoing) -> None:
        """Before a message is sent, on the publishing thread; may change ``outgoing.headers``."""

    async def publish_async(self, outgoing: Outgoing) -> None:
        """Before a message is sent, on the event loop."""


def _overrides(middleware: Middleware, name: str) -> bool:
    return getattr(type(middleware), name) is not getattr(Middleware, name)


def validated(middlewares: Iterable[object]) -> list[Middleware]:
    """``middlewares`` as a list; a :class:`ConfigurationError` for anything that is not one."""
    if isinstance(middlewares, (str, bytes, Middleware)):
        raise ConfigurationError(
            f"middlewares must be a list of Middleware instances, got {middlewares!r}; "
            f"write [{middlewares!r}]"
        )
    found = list(middlewares)
    for middleware in found:
        check(middleware)
    return found  # type: ignore[return-value]  # checked above


def check(middleware: object) -> Middleware:
    if isinstance(middleware, type) and issubclass(middleware, Middleware):
        raise ConfigurationError(
            f"{middleware.__name__} is a Middleware class; pass an instance: "
            f"{middleware.__name__}()"
        )
    if not isinstance(middleware, Middleware):
        raise ConfigurationError(
            f"{middleware!r} is not a Middleware; subclass messaging.Middleware and override "
            f"consume, consume_async, publish or publish_async"
        )
    return middleware


# -- consuming ----------------------------------------------------------------


class ConsumeChain:
    """The consume steps of a subscriber's middlewares, compiled once when it starts."""

    __slots__ = ("_async_steps", "_sync_steps")

    def __init__(
        self, middlewares: Sequence[Middleware], run_on_loop: RunOnLoop | None = None
    ) -> None:
        """``run_on_loop``: for the sync API, how to run an async-only middleware's steps."""
        sync_steps: list[Callable[[Envelope], Any]] = []
        async_steps: list[Callable[[Envelope], Any]] = []
        for middleware in middlewares:
            has_sync = _overrides(middleware, "consume")
            has_async = _overrides(middleware, "consume_async")
            if has_sync:
                sync_steps.append(middleware.consume)
            elif has_async and run_on_loop is not None:
                sync_steps.append(_driven_on_loop(middleware.consume_async, run_on_loop))
            if has_async:
                async_steps.append(middleware.consume_async)
            elif has_sync:
                async_steps.append(middleware.consume)
        self._sync_steps = tuple(sync_steps)
        self._async_steps = tuple(async_steps)

    def __bool__(self) -> bool:
        return bool(self._sync_steps or self._async_steps)

    def run(
        self, envelope: Envelope, handler: Callable[[ProtoMessage, dict[str, Any]], None]
    ) -> None:
        """Run the steps and ``handler`` on this thread; raises what fails the message."""
        entered: list[ConsumeStep] = []
        error: BaseException | None = None
        try:
            for step in self._sync_steps:
                generator = step(envelope)
                if generator is None:
                    continue
                try:
                    next(generator)
                except StopIteration:
                    break  # ended without yielding: handled, the handler does not run
                entered.append(generator)
            else:
                handler(envelope.message, envelope.properties)
        except Exception as exc:
            error = exc
        for generator in reversed(entered):
            error = _leave(generator, error)
        if error is not None:
            raise error

    async def run_async(
        self,
        envelope: Envelope,
        handler: Callable[[ProtoMessage, dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Run the steps and ``handler`` on the event loop; raises what fails the message."""
        entered: list[ConsumeStep | AsyncConsumeStep] = []
        error: BaseException | None = None
        try:
            for step in self._async_steps:
                generator = step(envelope)
                if generator is None:
                    continue
                if isinstance(generator, Generator):
                    try:
                        next(generator)
                    except StopIteration:
                        break
                else:
                    try:
                        await generator.__anext__()
                    except StopAsyncIteration:
                        break
                entered.append(generator)
            else:
                await handler(envelope.message, envelope.properties)
        except Exception as exc:
            error = exc
        for generator in reversed(entered):
            if isinstance(generator, Generator):
                error = _leave(generator, error)
            else:
                error = await _leave_async(generator, error)
        if error is not None:
            raise error


def _leave(generator: ConsumeStep, error: BaseException | None) -> BaseException | None:
    """Resume ``generator`` after the inner steps; returns the error that stands after it."""
    try:
        if error is None:
            next(generator)
        else:
            generator.throw(error)
    except StopIteration:
        return None  # finished: a success, or it handled the error
    except Exception as exc:
        return exc
    generator.close()
    return ConfigurationError(f"middleware step {_name(generator)} yielded more than once")


async def _leave_async(
    generator: AsyncConsumeStep, error: BaseException | None
) -> BaseException | None:
    try:
        if error is None:
            await generator.__anext__()
        else:
            await generator.athrow(error)
    except StopAsyncIteration:
        return None
    except Exception as exc:
        return exc
    await generator.aclose()
    return ConfigurationError(f"middleware step {_name(generator)} yielded more than once")


def _name(generator: object) -> str:
    return str(getattr(generator, "__qualname__", generator))


def _driven_on_loop(
    step: Callable[[Envelope], AsyncConsumeStep | None], run_on_loop: RunOnLoop
) -> Callable[[Envelope], ConsumeStep | None]:
    """An async consume step as a sync one: each of its steps runs on the event loop."""

    def driven(envelope: Envelope) -> ConsumeStep | None:
        generator = step(envelope)
        if generator is None:
            return None
        return _drive(generator, run_on_loop)

    return driven


def _drive(generator: AsyncConsumeStep, run_on_loop: RunOnLoop) -> ConsumeStep:
    try:
        run_on_loop(generator.__anext__())
    except StopAsyncIteration:
        return  # ended without yielding
    try:
        yield
    except Exception as exc:
        try:
            run_on_loop(generator.athrow(exc))
        except StopAsyncIteration:
            return
        run_on_loop(generator.aclose())
        raise ConfigurationError("an async middleware step yielded more than once") from None
    try:
        run_on_loop(generator.__anext__())
    except StopAsyncIteration:
        return
    run_on_loop(generator.aclose())
    raise ConfigurationError("an async middleware step yielded more than once")


# -- publishing ---------------------------------------------------------------


class PublishChain:
    """The publish hooks of a publisher's middlewares (the pool's first, then its own)."""

    __slots__ = ("_after", "_before")

    def __init__(self, middlewares: Iterable[Middleware]) -> None:
        ordered = list(middlewares)
        self._before = tuple(m.publish for m in ordered if _overrides(m, "publish"))
        self._after = tuple(m.publish_async for m in ordered if _overrides(m, "publish_async"))

    @property
    def has_sync(self) -> bool:
        return bool(self._before)

    @property
    def has_async(self) -> bool:
        return bool(self._after)

    def prepare(self, outgoing: Outgoing) -> None:
        for hook in self._before:
            hook(outgoing)

    async def before_send(self, outgoing: Outgoing) -> None:
        for hook in self._after:
            await hook(outgoing)


__all__ = [
    "ConsumeChain",
    "Envelope",
    "Middleware",
    "Outgoing",
    "PublishChain",
    "check",
    "validated",
]
