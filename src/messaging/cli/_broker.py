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
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import aiormq.exceptions as amqp_errors
import typer
from pamqp.commands import Basic
from rich.console import Console
from rich.markup import escape

from messaging.aio.pool import AsyncConnectionPool
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.config import RabbitMQConfig, load_config
from messaging.errors import ConnectionFailedError, MessagingError, PublishTimeoutError
from messaging.transport import ManagedChannel
from messaging.transport.errors import (
    CONNECTION_LOST,
    translate_publish_error,
    translate_topology_error,
)

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


def console() -> Console:
    return Console(highlight=False)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}"
    )
    raise typer.Exit(code)


def fail_with(exc: MessagingError) -> NoReturn:
    fail(f"{type(exc).__name__}: {exc}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; an error of ours becomes one red line and exit 2."""
    try:
        return asyncio.run(coro)
    except MessagingError as exc:
        fail_with(exc)


def configure_logging(verbose: bool) -> None:
    """Quiet unless asked: the commands report failures themselves, once.

    Left alone when the process already configured logging (a test runner,
    an embedding program).
    """
    if logging.getLogger().handlers:
        return
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.CRITICAL,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )


@dataclass(frozen=True)
class QueueInfo:
    name: str
    messages: int
    consumers: int


class Broker:
    """One CLI command's connections; use :func:`open_broker`."""

    def __init__(self, config: RabbitMQConfig) -> None:
        self.config = config.model_copy(update={"connection_name": "chimera-bus"})
        # A CLI should say quickly that the broker is down, not retry for a minute.
        self.pool = AsyncConnectionPool(
            self.config, max_retries=2, initial_retry_delay=0.5, max_retry_delay=2.0
        )
        # Passive declares of missing entities close their channel; a managed
        # channel simply reopens on the next use.
        self._probe = self.pool.consuming.channel("cli:probe")

    async def connect(self) -> None:
        await self.pool.consuming.connection.get()

    def reader(self, purpose: str) -> ManagedChannel:
        """A plain channel on the consuming connection (get, ack, consume)."""
        return self.pool.consuming.channel(f"cli:{purpose}")

    def confirmed(self, purpose: str) -> ManagedChannel:
        """A channel with publisher confirms on the publishing connection."""
        return self.pool.publishing.channel(f"cli:{purpose}", confirms=True)

    async def queue(self, name: str) -> QueueInfo | None:
        """Depth and consumers of ``name``, or None when it does not exist."""
        raw = await self._probe.raw()
        try:
            ok = await raw.queue_declare(name, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            return None
        except CONNECTION_LOST as exc:
            raise _lost_or_refused(exc) from exc
        return QueueInfo(name, int(ok.message_count or 0), int(ok.consumer_count or 0))

    async def exchange_exists(self, name: str) -> bool:
        if name == "":
            return True  # the default exchange always exists and cannot be declared
        raw = await self._probe.raw()
        try:
            await raw.exchange_declare(name, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            return False
        except CONNECTION_LOST as exc:
            raise _lost_or_refused(exc) from exc
        return True

    async def close(self) -> None:
        await self.pool.close()


def _lost_or_refused(exc: BaseException) -> MessagingError:
    if isinstance(exc, amqp_errors.ChannelClosed):
        return translate_topology_error(exc)
    return ConnectionFailedError(f"lost the connection to the broker: {exc!r}")


@asynccontextmanager
async def open_broker(config: RabbitMQConfig | None = None) -> AsyncIterator[Broker]:
    broker = Broker(config if config is not None else load_config().rabbitmq)
    try:
        await broker.connect()
        yield broker
    finally:
        await broker.close()


async def publish_confirmed(
    channel: ManagedChannel,
    body: bytes,
    *,
    exchange: str,
    routing_key: str,
    properties: Basic.Properties,
    timeout: float,
) -> None:
    """Publish mandatory and wait for the confirm; raise a PublishError subclass otherwise.

    Unlike :class:`~messaging.aio.AsyncEventPublisher` this sends ``properties``
    as given, so a replayed dead letter keeps its ids, type and timestamp, and
    it never re-sends: a replay that cannot be confirmed stays in the DLQ.
    """
    raw = await channel.raw(timeout=timeout)
    try:
        await raw.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
            timeout=timeout,
        )
    except TimeoutError as exc:
        raise PublishTimeoutError(
            f"no confirm for {properties.message_id} within {timeout:.1f}s"
        ) from exc
    except (amqp_errors.DeliveryError, amqp_errors.ChannelClosed) as exc:
        if isinstance(exc, amqp_errors.ChannelClosed) and not isinstance(
            exc, amqp_errors.ChannelNotFoundEntity | amqp_errors.ChannelAccessRefused
        ):
            raise ConnectionFailedError(f"the publishing channel closed: {exc!r}") from exc
        raise translate_publish_error(exc, exchange, routing_key) from exc
    except CONNECTION_LOST as exc:
        raise ConnectionFailedError(f"lost the connection while publishing: {exc!r}") from exc


__all__ = [
    "DEFAULT_EXCHANGE",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "Broker",
    "ExchangeOption",
    "QueueInfo",
    "configure_logging",
    "console",
    "fail",
    "fail_with",
    "open_broker",
    "publish_confirmed",
    "run",
]
