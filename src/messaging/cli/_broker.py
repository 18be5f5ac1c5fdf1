"""The CLI's way to the broker, and how its failures reach the terminal.

Everything AMQP-shaped the commands need goes through here, on top of
:mod:`messaging.transport`: one pool (a consuming and a publishing connection,
as the library keeps them apart), passive declares that answer "missing"
instead of raising, and a confirmed publish that raises our own errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.cli._output import make_console, text
from messaging.config import BrokerNode, RabbitMQConfig, load_config
from messaging.errors import (
    ConfigurationError,
    ConnectionFailedError,
    MessagingError,
    PublishTimeoutError,
)
from messaging.ops.logs import configure_logging as configure_logging_to_stderr
from messaging.ops.logs import redact
from messaging.transport import Channel, ConnectionLost, MessageProperties, QueueInfo

T = TypeVar("T")

EXIT_OK = 0
EXIT_PROBLEM = 1
"""The command ran, and found something wrong (status) or could not finish all of it (replay)."""
EXIT_ERROR = 2
"""The command could not run: broker unreachable, login refused, bad input, missing queue."""

ExchangeOption = Annotated[
    str,
    typer.Option(
        "--exchange",
        "-e",
        envvar="CHIMERA_EXCHANGE",
        help="The events exchange.",
        show_default=True,
    ),
]


class _Chosen:
    """What this invocation's options said about the broker (reset for each command)."""

    url: str | None = None


def choose_url(value: str | None) -> str | None:
    """The ``--url`` option's callback: remember it for :func:`broker_config`."""
    _Chosen.url = value or None
    return value


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The broker, as RABBITMQ__URL takes it: amqp:// or amqps://user:password@host:port"
        "/vhost, "
        "or several comma-separated (cluster nodes, tried in order). Wins over RABBITMQ__*. "
        "A password here shows in `ps`: prefer RABBITMQ__URL or RABBITMQ__PASSWORD.",
        callback=choose_url,
        show_default=False,
    ),
]


def broker_config() -> RabbitMQConfig:
    """The broker settings: RABBITMQ__* from the environment, with ``--url`` winning.

    The URL is parsed and checked by :mod:`messaging.config`, exactly as
    ``RABBITMQ__URL`` is.
    """
    config = load_config().rabbitmq
    url = _Chosen.url
    if url is None:
        return config
    if "url" not in RabbitMQConfig.model_fields:
        raise ConfigurationError(
            "--url needs a messaging.config that reads broker URLs (RABBITMQ__URL); "
            "this version does not: use RABBITMQ__HOST, RABBITMQ__PORT, ... instead"
        )
    settings: dict[str, Any] = {name: getattr(config, name) for name in config.model_fields_set}
    settings["url"] = url
    try:
        return RabbitMQConfig(**settings)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--url: {exc}") from None


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """One line on stderr, ``error: ...``, then exit with ``code``.

    The line never wraps, shows control characters as escapes, and masks the
    password of any URL in it (a URL pasted into the wrong variable ends up in
    the error message).
    """
    errors = make_console(stderr=True)
    errors.soft_wrap = True
    errors.print(text(("error: ", "bold red"), redact(message)))
    raise typer.Exit(code)


def fail_with(exc: MessagingError) -> NoReturn:
    fail(f"{type(exc).__name__}: {exc}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; an error of ours becomes one red line and exit 2."""
    try:
        return asyncio.run(coro)
    except MessagingError as exc:
        fail_with(exc)


class ReportedByTheCommand(logging.Filter):
    """Drops the library's log line for a failed publish: the command prints that error itself.

    A publish that fails raises to the command, which prints it as its one
    ``error:`` line; with the library's ERROR line as well, an operator would
    read the same failure twice.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "messaging.publisher" and record.levelno >= logging.ERROR)


def configure_logging(verbose: bool) -> None:
    """Quiet unless asked (``-v``): the commands report failures themselves, once.

    Log lines go to stderr as plain lines, with the library's format (ids in
    brackets, URL passwords masked). Left alone when the process already
    configured logging (a test runner, an embedding program).
    """
    if logging.getLogger().handlers:
        return
    # The library's own handler: a later configure_logging() (chimera-bus run) replaces it.
    handler = configure_logging_to_stderr(logging.INFO if verbose else logging.CRITICAL)
    handler.addFilter(ReportedByTheCommand())


class Broker:
    """One CLI command's connections; use :func:`open_broker`."""

    def __init__(self, config: RabbitMQConfig) -> None:
        self.config = config.model_copy(update={"connection_name": "chimera-bus"})
        # A CLI should say quickly that the broker is down, not retry for a minute.
        self.pool = AsyncConnectionPool(
            self.config, max_retries=2, initial_retry_delay=0.5, max_retry_delay=2.0
        )
        self.inspector = self.pool.consuming.inspector("cli:inspect")

    async def connect(self) -> None:
        await self.pool.consuming.connect()

    @property
    def node(self) -> BrokerNode:
        """The broker node this command's connection is on (one of RABBITMQ__URL's)."""
        return self.pool.consuming.node or self.config.nodes()[0]

    def reader(self, purpose: str) -> Channel:
        """A plain channel on the consuming connection (get, ack, consume)."""
        return self.pool.consuming.channel(f"cli:{purpose}")

    def confirmed(self, purpose: str) -> Channel:
        """A channel with publisher confirms on the publishing connection."""
        return self.pool.publishing.channel(f"cli:{purpose}", confirms=True)

    async def queue(self, name: str) -> QueueInfo | None:
        """Depth and consumers of ``name``, or None when it does not exist."""
        return await self.inspector.queue(name)

    async def exchange_exists(self, name: str) -> bool:
        return await self.inspector.exchange_exists(name)

    async def close(self) -> None:
        await self.pool.close()


@asynccontextmanager
async def open_broker(config: RabbitMQConfig | None = None) -> AsyncIterator[Broker]:
    broker = Broker(config if config is not None else broker_config())
    try:
        await broker.connect()
        yield broker
    finally:
        await broker.close()


async def publish_confirmed(
    channel: Channel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: MessageProperties,
    timeout: float,
) -> None:
    """Publish mandatory and wait for the confirm; raise a PublishError subclass otherwise.

    Unlike :class:`~messaging.aio.AsyncEventPublisher` this sends ``properties``
    as given, so a replayed dead letter keeps its ids, type and timestamp, and
    it never re-sends: a replay that cannot be confirmed stays in the DLQ.
    """
    try:
        await channel.publish(
            body, exchange, routing_key, properties, mandatory=True, timeout=timeout
        )
    except TimeoutError as exc:
        raise PublishTimeoutError(
            f"no confirm for {properties.message_id} within {timeout:.1f}s"
        ) from exc
    except ConnectionLost as exc:
        raise ConnectionFailedError(f"lost the connection while publishing: {exc!r}") from exc


__all__ = [
    "DEFAULT_EXCHANGE",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "Broker",
    "ExchangeOption",
    "QueueInfo",
    "UrlOption",
    "broker_config",
    "choose_url",
    "configure_logging",
    "fail",
    "fail_with",
    "open_broker",
    "publish_confirmed",
    "run",
]
