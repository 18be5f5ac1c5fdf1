"""One worker of ``chimera-bus run``: build the user's agent and consume until told to stop.

Runs as its own process, ``python -m messaging.cli._worker TARGET``, started
by the supervisor in :mod:`messaging.cli.run` (which sets ``MONITORING__HTTP_PORT``
for each worker). Needs nothing from the ``cli`` extra.

TARGET is ``package.module:Name``, where ``Name`` is a subscriber or agent
class (sync or asyncio) taking the connection pool as its one required
argument, or any callable that takes a :class:`~messaging.ConnectionPool` and
returns a sync subscriber or agent.

Exit status: 0 stopped by SIGTERM/SIGINT, 1 the agent failed while running
(the supervisor restarts it), 2 the target or the configuration is wrong
(restarting cannot help, and the supervisor stops).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.subscriber import AsyncEventSubscriber
from messaging.config import load_config
from messaging.connection import ConnectionPool
from messaging.context import InMemoryContextStore
from messaging.errors import ConfigurationError, MessagingError
from messaging.ops.logs import configure_from_config
from messaging.subscriber import EventSubscriber

log = logging.getLogger("messaging.run")

EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_CANNOT_START = 2

WORKER_ENV = "CHIMERA_RUN_WORKER"
"""``<index>/<count>`` of this worker, set by the supervisor."""


def load_target(target: str) -> Callable[..., Any]:
    """``package.module:Name`` -> the object; ConfigurationError saying what is wrong."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"{target!r} is not package.module:AgentClass (a module, a colon, a name)"
        )
    # As documented (and as uvicorn and gunicorn do): a package in the current
    # directory imports, although a console script's sys.path starts at its bin/.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from None
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no {attribute!r}") from None
    if not callable(found):
        raise ConfigurationError(f"{target} is not a class or a function")
    return found  # type: ignore[no-any-return]


def is_async(factory: Callable[..., Any]) -> bool:
    return isinstance(factory, type) and issubclass(factory, AsyncEventSubscriber)


def worker_position() -> tuple[int, int]:
    index, _, count = os.environ.get(WORKER_ENV, "1/1").partition("/")
    return int(index), int(count or 1)


def warn_about_local_state(agent: object, workers: int) -> None:
    """With several workers, per-process memory splits a workflow between processes."""
    core = getattr(agent, "agent", None)
    contexts = getattr(core, "contexts", None)
    if workers > 1 and isinstance(contexts, InMemoryContextStore):
        log.warning(
            "%s runs as %d workers but keeps workflow context in this process's memory "
            "(InMemoryContextStore): the answer to a request sent by one worker may "
            "reach another, which will not find its context; and an @idempotent handler "
            "remembers message ids per worker. Set STORE__REDIS_URL to share them "
            "through Redis, or run one worker",
            type(agent).__name__,
            workers,
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m messaging.cli._worker package.module:AgentClass\n")
        return EXIT_CANNOT_START
    index, workers = worker_position()
    try:
        settings = load_config()
        configure_from_config(settings)
        factory = load_target(args[0])
    except ConfigurationError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_CANNOT_START
    name = f"{args[0]} worker {index}/{workers}"
    config = settings.rabbitmq.model_copy(update={"connection_name": name})
    log.info("%s starting (pid %d)", name, os.getpid())
    try:
        if is_async(factory):
            asyncio.run(_run_async(factory, config, workers))
        else:
            _run_sync(factory, config, workers)
    except ConfigurationError as exc:
        log.error("%s cannot start: %s", name, exc)
        return EXIT_CANNOT_START
    except MessagingError as exc:
        log.error("%s failed: %s: %s", name, type(exc).__name__, exc)
        return EXIT_FAILED
    log.info("%s stopped", name)
    return EXIT_STOPPED


def _run_sync(factory: Callable[..., Any], config: Any, workers: int) -> None:
    with ConnectionPool(config) as pool:
        agent = factory(pool)
        if not isinstance(agent, EventSubscriber):
            raise ConfigurationError(
                f"{factory!r} gave {type(agent).__name__}, not an EventSubscriber or BaseAgent"
            )
        warn_about_local_state(agent, workers)
        try:
            agent.start_consuming()  # returns on SIGTERM or SIGINT
        finally:
            close = getattr(agent, "close", None)  # agents have one; subscribers stop alone
            if callable(close):
                close()


async def _run_async(factory: Callable[..., Any], config: Any, workers: int) -> None:
    pool = AsyncConnectionPool(config)
    try:
        agent = factory(pool)
        warn_about_local_state(agent, workers)
        await agent.start_consuming()  # returns on SIGTERM or SIGINT
    finally:
        await pool.close()


if __name__ == "__main__":
    sys.exit(main())
