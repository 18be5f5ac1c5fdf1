"""An optional HTTP endpoint per process: ``/metrics``, ``/healthz``, ``/readyz``.

Off by default: :func:`serve_from_config` starts it when
``MONITORING__HTTP_PORT`` is set. It runs a small threaded HTTP server in a
daemon thread, so it answers while handlers run, and asks the broker through
the pool's own event loop:

- ``/metrics``: every metric in the default Prometheus registry, including
  connection state and ``chimera_dlq_messages`` for the watched subscribers.
- ``/healthz`` (liveness): 200 while the process runs and its IO loop answers.
- ``/readyz`` (readiness): 200 only while both connections of the pool are up
  and every watched subscriber is consuming, checked against the broker (its
  consumer count on the queue, by passive declare), not just our own flag.
  The answer is cached for :data:`READY_CACHE_SECONDS`; the body is JSON and
  says what is not ready, but never who or where: no user names, hosts or
  broker error texts go to an unauthenticated client (those are in
  ``pool.health()`` and ``chimera-bus status``).

The server is bounded: at most ``max_connections`` clients at once (more are
answered 503 and closed at once), and each request must arrive whole within
``request_timeout`` seconds, so idle or half-sent requests cannot pile up
threads. A client that hangs up is logged at DEBUG.

Passive declares go through a channel of their own: a missing queue makes the
broker close the channel it was asked on, and that must never be a channel
that consumes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from messaging.aio.hooks import Consuming
from messaging.aio.pool import AsyncConnectionPool
from messaging.config import Settings, load_config
from messaging.errors import ConfigurationError
from messaging.ops.metrics import DLQS, DepthProbe
from messaging.topology import dlq_name
from messaging.transport import ConnectionHealth

log = logging.getLogger("messaging.health")

T = TypeVar("T")

PROBE_TIMEOUT = 2.0
"""Longest one question to the broker (or one ping of the IO loop) may take."""
READY_CACHE_SECONDS = 1.0
"""A scrape storm on /readyz asks the broker at most once per this many seconds."""
MAX_CONNECTIONS = 32
"""Clients served at once (one thread each); more are answered 503 and closed.
``MONITORING__HTTP_MAX_CONNECTIONS``."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request and read the answer.
``MONITORING__HTTP_REQUEST_TIMEOUT``."""


Watchable = Consuming
"""A subscriber or agent, sync or async, whose consumer must be attached."""


class LoopOwningPool(Protocol):
    """A pool whose async core runs on an event loop of its own thread.

    The sync :class:`messaging.ConnectionPool` is one: the health endpoint
    reaches the broker through ``aio`` on ``loop`` without importing the sync
    layer.
    """

    @property
    def aio(self) -> AsyncConnectionPool: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...


AnyPool = LoopOwningPool | AsyncConnectionPool


@dataclass(frozen=True)
class SubscriberState:
    agent: str
    queue: str
    consuming: bool
    """Our own flag: the consumer is attached to an open channel."""
    broker_consumers: int | None
    """Consumers the broker counts on the queue; None when it was not asked."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    problems: list[str]
    connections: dict[str, ConnectionHealth]
    subscribers: list[SubscriberState] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """What ``/readyz`` shows anyone who asks: states, no user names, hosts or errors."""
        return {
            "status": "ready" if self.ready else "not ready",
            "problems": self.problems,
            "connections": {
                name: {"connected": h.connected, "blocked": h.blocked}
                for name, h in self.connections.items()
            },
            "subscribers": [asdict(s) for s in self.subscribers],
        }


class LoopRunner:
    """Runs coroutines on the pool's event loop from other threads, with a timeout."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = PROBE_TIMEOUT) -> T:
        if self.on_loop_thread():
            coro.close()
            raise RuntimeError("a blocking health check was made on the event loop's own thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:g}s") from None

    def alive(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """The loop runs and gets round to a callback within ``timeout``."""
        if self.loop.is_closed() or not self.loop.is_running():
            return False
        if self.on_loop_thread():
            return True
        answered = threading.Event()
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # closed in between
            return False
        return answered.wait(timeout)

    def on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False


class BrokerProbe:
    """The broker's own counts for a queue, asked on the pool's loop from any thread."""

    def __init__(self, pool: AsyncConnectionPool, runner: LoopRunner) -> None:
        self._runner = runner
        self._inspector = pool.consuming.inspector("monitor:probe")

    def counts(self, queue: str) -> tuple[int, int]:
        """``(messages, consumers)`` of ``queue``; raises if it is missing or unreachable."""
        return self._runner.call(self._counts(queue), PROBE_TIMEOUT + 0.5)

    def message_count(self, queue: str) -> int:
        return self.counts(queue)[0]

    def consumer_count(self, queue: str) -> int:
        return self.counts(queue)[1]

    async def _counts(self, queue: str) -> tuple[int, int]:
        info = await asyncio.wait_for(self._inspector.queue(queue), PROBE_TIMEOUT)
        if info is None:
            raise LookupError(f"queue {queue!r} does not exist")
        return info.messages, info.consumers

    def close(self) -> None:
        if self._runner.loop.is_closed():
            return
        if self._runner.on_loop_thread():
            self._runner.loop.create_task(self._inspector.close())
            return
        with contextlib.suppress(Exception):
            self._runner.call(self._inspector.close())


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP for one pool's process.

    Sync API for both pool kinds. With an :class:`AsyncConnectionPool`, create
    it inside the running event loop (it asks the broker on that loop). Port 0
    lets the OS choose; :attr:`port` says which. :meth:`start` also opens the
    pool's connections in the background (connections are lazy otherwise, and
    a process that never publishes would never be ready).
    """

    def __init__(
        self,
        pool: AnyPool,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ready_cache_seconds: float = READY_CACHE_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be >= 1, got {max_connections!r}")
        if not request_timeout > 0:
            raise ConfigurationError(f"request_timeout must be > 0, got {request_timeout!r}")
        self.pool = pool if isinstance(pool, AsyncConnectionPool) else pool.aio
        self.host = host
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._requested_port = port
        self.runner = LoopRunner(_loop_of(pool))
        self.probe = BrokerProbe(self.pool, self.runner)
        self.ready_cache_seconds = ready_cache_seconds
        self._watched: list[Watchable] = []
        self._dlq_probes: dict[str, DepthProbe] = {}
        self._lock = threading.Lock()
        self._ready_lock = threading.Lock()
        self._ready_cache: tuple[float, Readiness] | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> HealthServer:
        if self._httpd is not None:
            return self
        httpd = _HTTPServer(
            (self.host, self._requested_port), self.max_connections, self.request_timeout
        )
        httpd.health = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="messaging-health"
        )
        self._thread.daemon = True
        self._thread.start()
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._connect(), self.runner.loop)
        log.info(
            "health endpoint on http://%s:%d (/metrics /healthz /readyz)", self.host, self.port
        )
        return self

    async def _connect(self) -> None:
        try:
            await self.pool.connect()
        except Exception as exc:  # /readyz says so; the pool keeps its own retry policy
            log.warning("health endpoint: could not connect the pool yet: %s", exc)

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            probes, self._dlq_probes = self._dlq_probes, {}
            self._watched.clear()
        for queue, probe in probes.items():
            DLQS.untrack(queue, probe)
        self.probe.close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The port listened on (the OS's choice when 0 was asked for), once started."""
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- what must be up ---------------------------------------------------

    def watch(self, subscriber: Watchable) -> None:
        """Count ``subscriber`` in readiness, and export the depth of its DLQ."""
        queue = subscriber.queue_name
        with self._lock:
            if any(w is subscriber for w in self._watched):
                return
            self._watched.append(subscriber)
            if queue in self._dlq_probes:
                return
            probe = _DLQProbe(self.probe, dlq_name(queue))
            self._dlq_probes[queue] = probe
        DLQS.track(queue, probe)
        self._ready_cache = None

    def unwatch(self, subscriber: Watchable) -> None:
        with self._lock:
            self._watched = [w for w in self._watched if w is not subscriber]
            queue = subscriber.queue_name
            probe = None
            if all(w.queue_name != queue for w in self._watched):
                probe = self._dlq_probes.pop(queue, None)
        if probe is not None:
            DLQS.untrack(queue, probe)
        self._ready_cache = None

    @property
    def watched(self) -> tuple[Watchable, ...]:
        with self._lock:
            return tuple(self._watched)

    # -- the checks --------------------------------------------------------

    def alive(self) -> bool:
        return self.runner.alive()

    def stopping(self) -> list[str]:
        """The watched subscribers whose shutdown has begun (``stop()`` or SIGTERM)."""
        return [w.agent_name for w in self.watched if getattr(w, "is_stopping", False)]

    def readiness(self) -> Readiness:
        """Connections up and every watched consumer attached; cached briefly.

        Not ready, at once and uncached, from the moment a watched subscriber
        begins to shut down: a load balancer should stop sending work then.
        """
        stopping = self.stopping()
        if stopping:
            health = self.pool.health()
            return Readiness(
                False,
                [f"{agent} is shutting down" for agent in stopping],
                {"publish": health.publishing, "consume": health.consuming},
            )
        with self._ready_lock:  # concurrent requests wait for one check and share it
            cached = self._ready_cache
            if cached is not None and time.monotonic() - cached[0] < self.ready_cache_seconds:
                return cached[1]
            readiness = self._check()
            self._ready_cache = (time.monotonic(), readiness)
            return readiness

    def _check(self) -> Readiness:
        health = self.pool.health()
        connections = {"publish": health.publishing, "consume": health.consuming}
        # No error texts here: they name users and hosts (pool.health() has them).
        problems = [
            f"{name} connection is down" for name, h in connections.items() if not h.connected
        ]
        subscribers = [
            self._check_subscriber(sub, health.consuming.connected, problems)
            for sub in self.watched
        ]
        return Readiness(not problems, problems, connections, subscribers)

    def _check_subscriber(
        self, sub: Watchable, broker_reachable: bool, problems: list[str]
    ) -> SubscriberState:
        agent, queue = sub.agent_name, sub.queue_name
        consuming = sub.is_consuming
        count: int | None = None
        if not consuming:
            problems.append(f"{agent} is not consuming {queue}")
        elif broker_reachable:
            try:
                count = self.probe.consumer_count(queue)
            except Exception as exc:
                log.warning("readiness: could not ask the broker about %s: %s", queue, exc)
                problems.append(f"could not ask the broker about {queue}")
            else:
                if count < 1:
                    problems.append(f"the broker counts no consumer on {queue} ({agent})")
        return SubscriberState(agent, queue, consuming, count)


class _DLQProbe:
    """The depth of one DLQ, for :data:`messaging.ops.metrics.DLQS`."""

    def __init__(self, probe: BrokerProbe, dlq: str) -> None:
        self._probe = probe
        self._dlq = dlq

    def __call__(self) -> int:
        return self._probe.message_count(self._dlq)


_BUSY_BODY = b'{"error": "too many open connections"}\n'
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_BUSY_BODY)
) + _BUSY_BODY
_DISCONNECTS = (ConnectionError, TimeoutError)
"""What a client hanging up (or never finishing its request) looks like to a handler."""


class _HTTPServer(ThreadingHTTPServer):
    """A thread per client, but never more than ``max_connections`` of them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog: take clients in, to serve or refuse them
    health: HealthServer

    def __init__(
        self, address: tuple[str, int], max_connections: int, request_timeout: float
    ) -> None:
        super().__init__(address, _Handler)
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_connections = max_connections

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug(
                "health endpoint: %d connections open; refusing one more",
                self._max_connections,
            )
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, _DISCONNECTS):
            log.debug("health endpoint: client went away (%s)", _describe(error))
            return
        log.error("health endpoint: a request failed", exc_info=error)


class _DeadlineReader:
    """The request stream, with one deadline for the whole request.

    A socket timeout alone bounds each read, so a client sending a byte every
    few seconds would keep its thread for ever; here each read may only use
    what is left of ``timeout`` since the request began.
    """

    def __init__(self, raw: Any, sock: socket.socket, timeout: float) -> None:
        self._raw = raw
        self._sock = sock
        self._deadline = time.monotonic() + timeout

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)

    def readline(self, size: int = -1) -> bytes:
        self._arm()
        line: bytes = self._raw.readline(size)
        return line

    def read(self, size: int = -1) -> bytes:
        self._arm()
        data: bytes = self._raw.read(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "chimera-health"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # bounds writing the answer too
        self.rfile = _DeadlineReader(  # type: ignore[assignment]
            self.rfile, self.connection, self.server.request_timeout
        )

    def handle(self) -> None:
        try:
            super().handle()
        except _DISCONNECTS as exc:
            log.debug("health endpoint: client went away (%s)", _describe(exc))

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/metrics":
                self._metrics()
            elif path == "/healthz":
                if self.server.health.stopping():
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "shutting down"})
                    return
                alive = self.server.health.alive()
                status = HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE
                body = {"status": "alive" if alive else "the IO event loop does not answer"}
                self._json(status, body)
            elif path == "/readyz":
                readiness = self.server.health.readiness()
                ok = HTTPStatus.OK if readiness.ready else HTTPStatus.SERVICE_UNAVAILABLE
                self._json(ok, readiness.to_json())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint {path}"})
        except _DISCONNECTS:
            raise  # the client hung up: nothing to answer (handle() logs it at DEBUG)
        except Exception:  # an endpoint must answer, never hang up
            log.exception("health endpoint %s failed", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (logged)"})

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(HTTPStatus.OK, content_type, encoder(REGISTRY))

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = (json.dumps(body, indent=2, default=str) + "\n").encode()
        self._send(status, "application/json", data)

    def _send(self, status: HTTPStatus, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _loop_of(pool: AnyPool) -> asyncio.AbstractEventLoop:
    if not isinstance(pool, AsyncConnectionPool):
        return pool.loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "a HealthServer for an AsyncConnectionPool must be created inside the running "
            "event loop that uses the pool"
        ) from None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_server: HealthServer | None = None
_server_lock = threading.Lock()


def serve_from_config(pool: AnyPool, settings: Settings | None = None) -> HealthServer | None:
    """Start this process's endpoint if ``MONITORING__HTTP_PORT`` is set; None otherwise.

    One per process: later calls return the server already running (whatever
    pool they pass). Watch subscribers on it with :meth:`HealthServer.watch`.
    """
    global _server
    with _server_lock:
        if _server is not None:
            return _server
        monitoring = (settings if settings is not None else load_config()).monitoring
        if monitoring.http_port is None:
            return None
        _server = HealthServer(
            pool,
            host=monitoring.http_host,
            port=monitoring.http_port,
            max_connections=monitoring.http_max_connections,
            request_timeout=monitoring.http_request_timeout,
        ).start()
        return _server


def stop_serving() -> None:
    """Close the endpoint :func:`serve_from_config` started, if any."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.close()


def serve_and_watch(pool: AsyncConnectionPool, subscriber: Consuming) -> None:
    """The hook the ``messaging`` package registers on subscriber start.

    Serves the endpoint when ``MONITORING__HTTP_PORT`` is set (on the loop that
    runs ``pool``) and counts ``subscriber`` in its readiness.
    """
    server = serve_from_config(pool)
    if server is not None:
        server.watch(subscriber)
