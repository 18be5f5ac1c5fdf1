"""One AMQP connection kept alive: connect with backoff, reconnect after a drop.

With several broker nodes (``RABBITMQ__URL`` listing a cluster's nodes), one
attempt tries each node in the listed order and takes the first that answers;
after a drop, the next attempt starts with the node after the one that was
lost, so a connection moves off a dead node at once instead of waiting for it.

Reconnecting is done here, by composition, for every user of the connection:
after a drop the supervisor retries in the background with growing, jittered,
capped delays (for as long as it takes: a service must outlive an outage), and
then calls the listeners registered with :meth:`on_reconnect` so they reopen
their channels, re-declare and re-consume. Callers that need the connection
now (a publish) wait for it with :meth:`wait_connected`, which gives up after
the retry policy or their own timeout, whichever ends first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq.abc
from aio_pika.abc import AbstractConnection, TimeoutType, UnderlayConnection
from aiormq.exceptions import AMQPError
from yarl import URL

from messaging.backoff import RetryPolicy
from messaging.config import BrokerNode, RabbitMQConfig
from messaging.errors import (
    BrokerRefusedError,
    CertificateVerificationError,
    ClosedError,
    ConnectionFailedError,
)
from messaging.transport.amqp.errors import translate
from messaging.transport.amqp.frame_reader import BusConnection
from messaging.transport.amqp.frames import DEFAULT_FRAME_MAX
from messaging.transport.amqp.tls import client_context
from messaging.transport.base import ConnectionHealth, ConnectionLost

log = logging.getLogger("messaging.connection")

ReconnectListener = Callable[[], Awaitable[None]]


class SupervisedConnection:
    def __init__(self, config: RabbitMQConfig, policy: RetryPolicy, purpose: str) -> None:
        self.config = config
        self.policy = policy
        self.purpose = purpose
        self.nodes: tuple[BrokerNode, ...] = config.nodes()
        self.node: BrokerNode | None = None
        """The node of the current (or last) connection."""
        self._first_node = 0
        # Built once, here: a CA or key file that cannot be loaded is a
        # ConfigurationError when the pool is made, not at the first publish.
        self._tls: ssl.SSLContext | None = client_context(config) if config.uses_tls else None
        self._connection: AbstractConnection | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._connected_at = 0.0
        self._reconnects = 0
        self._failed_retries = 0
        self._last_error: str | None = None
        self._listeners: list[ReconnectListener] = []
        self._connect_lock: asyncio.Lock | None = None
        self._connected: asyncio.Event | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- state -------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return _alive(self._connection)

    @property
    def frame_max(self) -> int:
        """The largest frame the broker takes on this connection, as negotiated at connect.

        :data:`~messaging.transport.amqp.frames.DEFAULT_FRAME_MAX` while not connected.
        """
        transport: Any = getattr(self._connection, "transport", None)
        inner: Any = getattr(transport, "connection", None)
        tune: Any = getattr(inner, "connection_tune", None)
        value = getattr(tune, "frame_max", None)
        return value if isinstance(value, int) and value > 0 else DEFAULT_FRAME_MAX

    def health(self) -> ConnectionHealth:
        connected = self.is_connected
        return ConnectionHealth(
            purpose=self.purpose,
            connected=connected,
            uptime=time.monotonic() - self._connected_at if connected else 0.0,
            reconnects=self._reconnects,
            last_error=self._last_error,
            blocked=connected and self._is_blocked(),
            node=self.node.address if connected and self.node is not None else None,
        )

    def on_reconnect(self, listener: ReconnectListener) -> None:
        """Call ``listener`` after every re-connection (not the first connection)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ReconnectListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- getting a connection ----------------------------------------------

    async def get(self) -> AbstractConnection:
        """The open connection, connecting first (bounded by the retry policy) if needed."""
        if self._closed:
            raise ClosedError(f"the {self.purpose} connection is closed")
        connection = self._live_connection()
        if connection is not None:
            return connection
        if self._reconnect_task is not None and not self._reconnect_task.done():
            return await self.wait_connected(timeout=None)
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._connection is not None and _alive(self._connection):
                return self._connection
            return await self._connect_with_retries()

    def _live_connection(self) -> AbstractConnection | None:
        """The connection if it is alive; one found dead goes through :meth:`lost`.

        Dead before its close callback said so: reconnecting the usual way
        lets the listeners restore every channel that was on it.
        """
        connection = self._connection
        if connection is None or _alive(connection):
            return connection
        self.lost(ConnectionError("the connection was found dead"))
        return None

    async def wait_connected(self, timeout: float | None) -> AbstractConnection:
        """Wait for the background reconnect; raise once the retry policy is spent.

        Raises :class:`ConnectionFailedError` when the supervisor has already
        failed more than ``max_retries`` times since the drop, or ``timeout``
        passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ClosedError(f"the {self.purpose} connection is closed")
            connection = self._live_connection()
            if connection is not None:
                return connection
            if self._reconnect_task is None or self._reconnect_task.done():
                return await self.get()
            if asyncio.current_task() is self._reconnect_task:
                # A reconnect listener (a channel's restore) found the new
                # connection dead already: waiting here would wait for this
                # very task, for ever. Fail the listener; the reconnect loop
                # sees the connection down and goes round again.
                raise ConnectionLost(
                    f"the {self.purpose} connection dropped again while it was being restored"
                )
            if self._failed_retries > self.policy.max_retries:
                raise ConnectionFailedError(
                    f"the broker at {self._where()} has been unreachable "
                    f"for {self._failed_retries} attempts (max_retries={self.policy.max_retries}); "
                    f"last error: {self._last_error}"
                )
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ConnectionFailedError(
                    f"no connection to the broker within {timeout:.1f}s; "
                    f"last error: {self._last_error}"
                )
            # Wake at least once a second to re-check the retry count.
            step = 1.0 if remaining is None else min(1.0, remaining)
            assert self._connected is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), step)

    async def _connect_with_retries(self) -> AbstractConnection:
        delays = self.policy.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._open()
            except _PERMANENT:
                raise
            except ConnectionFailedError as exc:
                delay = next(delays, None)
                if delay is None:
                    raise ConnectionFailedError(
                        f"{exc} (gave up after {attempt} attempts; "
                        f"max_retries={self.policy.max_retries})"
                    ) from exc.__cause__
                log.warning(
                    "%s connection attempt %d failed (%s); retrying in %.1fs",
                    self.purpose,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _open(self) -> AbstractConnection:
        """One attempt: each node in turn, from ``_first_node``; the first that answers wins.

        A refusal no retry can fix (credentials, vhost, an unverifiable
        certificate) is raised at once: the other nodes of a cluster share it.
        """
        count = len(self.nodes)
        failures: list[ConnectionFailedError] = []
        for step in range(count):
            index = (self._first_node + step) % count
            try:
                connection = await self._open_node(self.nodes[index])
            except _PERMANENT:
                raise
            except ConnectionFailedError as exc:
                failures.append(exc)
                if count > 1:
                    log.info("%s connection: %s; trying the next node", self.purpose, exc)
                continue
            self._first_node = index
            return connection
        if count == 1:
            raise failures[0]
        error = ConnectionFailedError(
            f"none of the {count} broker nodes answered: " + "; ".join(str(f) for f in failures)
        )
        self._last_error = str(error)
        raise error from failures[-1].__cause__

    async def _open_node(self, node: BrokerNode) -> AbstractConnection:
        cfg = self.config
        try:
            connection = await aio_pika.connect(
                host=node.host,
                port=node.port,
                login=node.username,
                password=node.password.get_secret_value(),
                virtualhost=node.vhost,
                ssl=node.tls,
                ssl_context=self._tls if node.tls else None,
                timeout=cfg.connect_timeout,
                heartbeat=cfg.heartbeat,
                client_properties={"connection_name": f"{cfg.connection_name}:{self.purpose}"},
                # aio-pika puts extra keywords in the URL's query, where aiormq
                # reads the SASL mechanism: PLAIN sends the user name and
                # password, EXTERNAL sends nothing (the broker takes the user
                # from the client certificate).
                auth=cfg.auth_mechanism,
                connection_class=_ClosedIfItFails,
            )
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: not a connect failure
            error = translate(exc, "connect", config=cfg, node=node)
            self._last_error = str(error)
            raise error from exc
        except _CONNECT_FAILURES as exc:
            # aio-pika lets more than AMQP and socket errors out of a handshake
            # the peer cuts short (StopAsyncIteration, RuntimeError, EOFError):
            # all of them mean "could not connect", and are retried.
            error = translate(exc, "connect", config=cfg, node=node)
            self._last_error = str(error)
            raise error from exc
        self._connection = connection
        self.node = node
        self._connected_at = time.monotonic()
        self._failed_retries = 0
        if self._connected is None:
            self._connected = asyncio.Event()
        self._connected.set()
        connection.close_callbacks.add(self._on_connection_closed)
        log.info("%s connection open to %s", self.purpose, node.safe_url())
        return connection

    def _where(self) -> str:
        return ", ".join(node.address for node in self.nodes)

    def _is_blocked(self) -> bool:
        # aio-pika exposes no public flag; aiormq's connection keeps an event
        # that is cleared while the broker has blocked us.
        transport: Any = getattr(self._connection, "transport", None)
        inner: Any = getattr(transport, "connection", None)
        unblocked = getattr(inner, "_Connection__connection_unblocked", None)
        return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()

    # -- losing it -----------------------------------------------------------

    def _on_connection_closed(self, sender: Any, exc: BaseException | None = None) -> None:
        if sender is self._connection:
            self.lost(exc)

    def lost(self, exc: BaseException | None = None) -> None:
        """The connection is dead: forget it and reconnect in the background.

        Called from the close callback, and by users of the connection that
        found it unusable first (aio-pika's ``is_closed`` turns True only on an
        explicit ``close()``, so liveness is tracked here).
        """
        connection = self._connection
        if connection is None:
            return
        self._connection = None
        if len(self.nodes) > 1 and self.node is not None:
            # Fail over: the next attempt starts with the node after the lost one.
            self._first_node = (self.nodes.index(self.node) + 1) % len(self.nodes)
        # Release the dead connection's resources; aio-pika would otherwise
        # leave its close() coroutine to the garbage collector.
        closing = asyncio.get_running_loop().create_task(_close_quietly(connection))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if self._connected is not None:
            self._connected.clear()
        if self._closed:
            return
        self._last_error = repr(exc) if exc is not None else "closed by the broker"
        log.warning(
            "%s connection to %s lost (%s); reconnecting",
            self.purpose,
            self.node.address if self.node is not None else "?",
            self._last_error,
        )
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(
                self._reconnect_forever(), name=f"reconnect-{self.purpose}"
            )

    async def _reconnect_forever(self) -> None:
        self._failed_retries = 0
        while not self._closed:
            delay = self.policy.delay(self._failed_retries)
            try:
                await self._open()
            except Exception as exc:  # this loop must outlive any failure
                self._failed_retries += 1
                level = (
                    logging.ERROR
                    if self._failed_retries > self.policy.max_retries
                    else logging.WARNING
                )
                log.log(
                    level,
                    "%s reconnect attempt %d failed (%s); next in %.1fs",
                    self.purpose,
                    self._failed_retries,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._reconnects += 1
            log.info(
                "%s connection restored on %s (reconnect #%d)",
                self.purpose,
                self.node.address if self.node is not None else "?",
                self._reconnects,
            )
            for listener in list(self._listeners):
                try:
                    await listener()
                except Exception:
                    # One listener failing must not keep the others down; the
                    # failure is its own to report (it logs with its context).
                    log.exception("%s reconnect listener failed", self.purpose)
            if self.is_connected:
                return
            # Dropped again while the listeners ran: this task is still the
            # one reconnecting, so go round again.

    async def close(self) -> None:
        self._closed = True
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done():
            task.cancel()
        connection, self._connection = self._connection, None
        if self._connected is not None:
            self._connected.set()  # wake waiters so they see the closed state
        if connection is not None and not connection.is_closed:
            await connection.close()
            log.info("%s connection closed", self.purpose)


_CONNECT_FAILURES: tuple[type[BaseException], ...] = (
    AMQPError,
    OSError,
    TimeoutError,
    EOFError,
    StopAsyncIteration,
    RuntimeError,
)


_PERMANENT: tuple[type[ConnectionFailedError], ...] = (
    BrokerRefusedError,
    CertificateVerificationError,
)
"""Connect failures no retry can fix: raised at once, never retried on another node."""


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        await connection.close()


def _alive(connection: AbstractConnection | None) -> bool:
    # aio-pika's ``is_closed`` turns True only after our own close(), and its
    # ``connected`` event is cleared by a callback that can run after channels
    # already failed; the protocol connection underneath knows first (its
    # reader and writer tasks stop the moment the socket does).
    if connection is None or connection.is_closed or not connection.connected.is_set():
        return False
    transport: Any = getattr(connection, "transport", None)
    inner: Any = getattr(transport, "connection", None)
    return inner is None or bool(inner.is_opened)


class _BusUnderlay(UnderlayConnection):
    """aio-pika's hold on the protocol connection, made of the bus's own aiormq class.

    aio-pika opens its protocol connection with ``aiormq.connect``; the bus's
    is :data:`~messaging.transport.amqp.frame_reader.BusConnection` (aiormq's,
    reading frames with the bus's fast reader) without changing aiormq's module.
    """

    @classmethod
    async def make_connection(
        cls, url: URL, timeout: TimeoutType = None, **kwargs: Any
    ) -> aiormq.abc.AbstractConnection:
        connection = BusConnection(url, **kwargs)
        await asyncio.wait_for(connection.connect(), timeout=timeout)
        await connection.ready()
        return connection


class _ClosedIfItFails(aio_pika.Connection):
    """aio-pika's connection over :class:`_BusUnderlay`, closed when its connect fails.

    ``aio_pika.connect`` drops a connection whose handshake failed without
    closing it; its ``__del__`` then schedules ``close()`` from wherever the
    garbage collector runs, which logs "Task was destroyed but it is pending"
    or "coroutine ... was never awaited" long after the failed attempt (one
    per reconnect attempt while a broker is down).
    """

    async def connect(self, timeout: TimeoutType = None) -> None:
        try:
            # aio-pika's Connection.connect, with the bus's underlay.
            self.transport = await _BusUnderlay.connect(
                self.url, self._on_connection_close, timeout=timeout, **self.kwargs
            )
            await self._on_connected()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.close()
            raise
