"""An in-process TCP proxy between a client and RabbitMQ that injects socket faults.

The proxy runs its own asyncio loop in a daemon thread, so sync tests (pika,
the library's sync facade) and async tests (aio-pika) can use it alike and a
stalled proxy never blocks the test's own loop. Every control method is
thread-safe and synchronous: when it returns, the fault is in force.

Forwarding uses bare ``asyncio.Protocol`` callbacks (no streams, no per-chunk
tasks) with write-buffer back-pressure, which keeps it at line rate for tens of
thousands of small AMQP frames a second.

Faults:

* ``drop_all()``: abort every live client/upstream pair at once (RST by default).
* ``stall(seconds)`` / ``unstall()``: stop forwarding both ways but keep both
  sockets open; the client sees a silent peer, as with a dead network path.
  The broker gives up after two missed heartbeats, but aiormq (aio-pika) only
  after ``(heartbeat + 1) * 3`` s of silence: ~6-7 s at ``heartbeat=1``.
* ``cut_after(n, direction=...)``: abort a connection once ``n`` bytes went one
  way; the ``n``-th byte is the last one forwarded, so frames are cut mid-way.
* ``refuse(True, how=...)``: new connections are closed on accept (``close``),
  reset on accept (``reset``), or not accepted at all (``unlisten``: the port
  is closed, so connecting fails with ECONNREFUSED).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

__all__ = ["Direction", "RefuseMode", "TcpProxy"]

Direction = Literal["to_broker", "to_client", "either"]
RefuseMode = Literal["close", "reset", "unlisten"]

T = TypeVar("T")

# Pause reading the other side when a transport holds this much unsent data.
_HIGH_WATER = 1 << 20
_LOW_WATER = 1 << 18


def _abort(transport: asyncio.Transport | None, *, reset: bool) -> None:
    """Abort now, dropping unsent data; with ``reset`` the peer gets an RST, not a FIN."""
    if transport is None or transport.is_closing():
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _CutRule:
    """Abort a connection once ``limit`` bytes went ``direction``."""

    def __init__(self, limit: int, direction: Direction, once: bool) -> None:
        self.limit = limit
        self.direction = direction
        self.once = once


class _Side(asyncio.Protocol):
    """One socket of a pair; forwards what it reads to the other side."""

    def __init__(self, pair: _Pair, reads: Literal["to_broker", "to_client"]) -> None:
        self.pair = pair
        self.reads = reads  # the direction of the bytes this side reads
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.backpressured = False  # reading paused because the peer cannot keep up
        self.eof = False
        self.held: list[bytes] = []  # read while stalled, forwarded on unstall

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        refused = self.pair.refused
        if refused is not None:
            if refused == "reset":
                _abort(transport, reset=True)
            else:
                transport.close()
            return
        transport.set_write_buffer_limits(high=_HIGH_WATER, low=_LOW_WATER)
        if self.reads == "to_broker":
            transport.pause_reading()  # the client waits until the upstream socket exists

    def data_received(self, data: bytes) -> None:
        if self.pair.proxy._stalled:
            self.held.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.forward(data)

    def forward(self, data: bytes) -> None:
        pair = self.pair
        peer = self.peer
        limit = pair.cut_limit(self.reads)
        if limit is not None and pair.sent[self.reads] + len(data) >= limit:
            data = data[: max(0, limit - pair.sent[self.reads])]
            pair.count(self.reads, len(data))
            if data and peer is not None and peer.writable():
                peer.write(data)
            pair.close(reset=True)
            return
        pair.count(self.reads, len(data))
        if peer is not None and peer.writable():
            peer.write(data)

    def writable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def flush_held(self) -> None:
        held, self.held = self.held, []
        for chunk in held:
            if self.pair.closed:
                return
            self.forward(chunk)

    # Back-pressure: our write buffer is full, so stop reading the peer until it drains.
    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.writable():
            peer.backpressured = True
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer.writable():
            peer.backpressured = False
            if not self.pair.proxy._stalled:
                peer.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # Half-close: pass the FIN on and keep the other direction open.
        self.eof = True
        peer = self.peer
        if (
            peer is not None
            and peer.transport is not None
            and peer.writable()
            and not peer.eof
            and peer.transport.can_write_eof()
        ):
            peer.transport.write_eof()
            return True
        self.pair.close(reset=False)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.close(reset=exc is not None)


class _Pair:
    """A client connection and its upstream connection to the broker."""

    def __init__(self, proxy: TcpProxy, cut: _CutRule | None) -> None:
        self.proxy = proxy
        self.client = _Side(self, "to_broker")
        self.upstream = _Side(self, "to_client")
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self.sent: dict[str, int] = {"to_broker": 0, "to_client": 0}
        self.cut: _CutRule | None = None
        self.cut_base: dict[str, int] = {}
        self.closed = False
        self.refused: RefuseMode | None = None  # set: close the client on accept
        if cut is not None:
            self.arm(cut)

    def arm(self, cut: _CutRule) -> None:
        """Apply ``cut`` counting from the bytes already forwarded."""
        self.cut = cut
        self.cut_base = dict(self.sent)

    def cut_limit(self, direction: str) -> int | None:
        cut = self.cut
        if cut is None or cut.direction not in ("either", direction):
            return None
        return cut.limit + self.cut_base[direction]

    def count(self, direction: str, n: int) -> None:
        self.sent[direction] += n
        self.proxy._bytes[direction] += n

    def close(self, *, reset: bool) -> None:
        """Close both sockets: abort (RST) with ``reset``, else flush and FIN."""
        if self.closed:
            return
        self.closed = True
        self.proxy._pairs.discard(self)
        for side in (self.client, self.upstream):
            side.held.clear()
            if reset:
                _abort(side.transport, reset=True)
            elif side.transport is not None and not side.transport.is_closing():
                side.transport.close()


class TcpProxy:
    """A fault-injecting TCP proxy; see the module docstring.

    >>> with TcpProxy() as proxy:
    ...     url = proxy.url(heartbeat=1)        # amqp://guest:guest@127.0.0.1:<port>/?heartbeat=1
    ...     proxy.stall(5)                      # the client hears nothing for 5 s
    """

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5672) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = "127.0.0.1"
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._stalled = False
        self._unstall_handle: asyncio.TimerHandle | None = None
        self._cut: _CutRule | None = None
        self._refusing: RefuseMode | None = None
        self._bytes: dict[str, int] = {"to_broker": 0, "to_client": 0}
        self.connections_total = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Start the loop thread and listen on an OS-chosen port (``self.port``)."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(
            target=run, name=f"TcpProxy->{self.upstream_port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        self._call_async(self._listen(0))
        return self

    def close(self) -> None:
        """Stop listening, abort every pair, stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call_async(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._loop = None
            self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def url(
        self,
        vhost: str = "/",
        *,
        user: str = "guest",
        password: str = "guest",
        **params: str | int | float,
    ) -> str:
        """An amqp URL through the proxy; ``params`` become the query (``heartbeat=1``, ...)."""
        query = f"?{urlencode(params)}" if params else ""
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"amqp://{auth}@{self.host}:{self.port}/{quote(vhost, safe='')}{query}"

    # -- faults ----------------------------------------------------------------------------

    def drop_all(self, *, reset: bool = True) -> int:
        """Drop every live pair now: RST both ways, or with ``reset=False`` a FIN (a clean
        close the client did not ask for). Returns how many pairs were dropped."""

        def drop() -> int:
            pairs = list(self._pairs)
            for pair in pairs:
                pair.close(reset=reset)
            return len(pairs)

        return self._call(drop)

    def stall(self, seconds: float | None = None) -> None:
        """Stop forwarding both ways, sockets kept open; ``None`` means until ``unstall()``.

        Connections made while stalled are stalled too.
        """

        def do() -> None:
            loop = self._require_loop()
            if self._unstall_handle is not None:
                self._unstall_handle.cancel()
                self._unstall_handle = None
            self._stalled = True
            for pair in self._pairs:
                for side in (pair.client, pair.upstream):
                    if side.transport is not None and side.writable():
                        side.transport.pause_reading()
            if seconds is not None:
                self._unstall_handle = loop.call_later(seconds, self._unstall)

        self._call(do)

    def unstall(self) -> None:
        """Resume forwarding, first passing on whatever was read while stalled."""
        self._call(self._unstall)

    def cut_after(
        self,
        n_bytes: int | None,
        direction: Direction = "to_broker",
        *,
        once: bool = False,
        live: bool = False,
    ) -> None:
        """Abort connections after ``n_bytes`` went ``direction`` (counted per connection).

        Applies to connections opened from now on: only the next one with ``once``,
        else each one until ``cut_after(None)``. With ``live`` the live connections
        are armed too, counting from now. The cut resets both sockets.
        """
        if n_bytes is not None and n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")

        def do() -> None:
            if n_bytes is None:
                self._cut = None
                for pair in self._pairs:
                    pair.cut = None
                return
            rule = _CutRule(n_bytes, direction, once)
            self._cut = rule
            if live:
                for pair in self._pairs:
                    pair.arm(rule)

        self._call(do)

    def refuse(self, on: bool = True, *, how: RefuseMode = "close") -> None:
        """Refuse new connections (``how``: close on accept, reset on accept, unlisten).

        ``refuse(False)`` accepts again, on the same port.
        """

        async def do() -> None:
            previous = self._refusing
            self._refusing = how if on else None
            if on and how == "unlisten" and self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            elif (not on or how != "unlisten") and previous == "unlisten":
                await self._listen(self.port)

        self._call_async(do())

    # -- counters ----------------------------------------------------------------------------

    @property
    def active_connections(self) -> int:
        """Live client connections that have an upstream pair."""
        return len(self._pairs)

    @property
    def bytes_forwarded(self) -> int:
        """Bytes forwarded both ways since start."""
        return self._bytes["to_broker"] + self._bytes["to_client"]

    @property
    def bytes_to_broker(self) -> int:
        return self._bytes["to_broker"]

    @property
    def bytes_to_client(self) -> int:
        return self._bytes["to_client"]

    @property
    def stalled(self) -> bool:
        return self._stalled

    # -- loop side ---------------------------------------------------------------------------

    async def _listen(self, port: int) -> None:
        loop = self._require_loop()
        self._server = await loop.create_server(
            self._accept, self.host, port, reuse_address=True, backlog=256
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self) -> asyncio.Protocol:
        """Protocol factory for the listening socket: build a pair, dial upstream."""
        cut = self._cut
        if cut is not None and cut.once:
            self._cut = None
        pair = _Pair(self, cut)
        if self._refusing is not None:
            pair.refused = self._refusing
            pair.closed = True
            return pair.client
        self._pairs.add(pair)
        self.connections_total += 1
        self._require_loop().create_task(self._dial(pair))
        return pair.client

    async def _dial(self, pair: _Pair) -> None:
        loop = self._require_loop()
        try:
            await loop.create_connection(
                lambda: pair.upstream, self.upstream_host, self.upstream_port
            )
        except OSError:
            pair.close(reset=True)
            return
        if pair.closed:
            _abort(pair.upstream.transport, reset=True)
            return
        if self._stalled:
            if pair.upstream.transport is not None:
                pair.upstream.transport.pause_reading()
            return
        client = pair.client.transport
        if client is not None and not client.is_closing():
            client.resume_reading()

    def _unstall(self) -> None:
        if self._unstall_handle is not None:
            self._unstall_handle.cancel()
            self._unstall_handle = None
        self._stalled = False
        for pair in list(self._pairs):
            for side in (pair.client, pair.upstream):
                side.flush_held()
            for side in (pair.client, pair.upstream):
                transport = side.transport
                if (
                    transport is not None
                    and not transport.is_closing()
                    and not side.backpressured
                    and side.peer is not None
                    and side.peer.transport is not None  # still dialling upstream: _dial resumes
                ):
                    transport.resume_reading()

    async def _shutdown(self) -> None:
        if self._unstall_handle is not None:
            self._unstall_handle.cancel()
            self._unstall_handle = None
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            pair.close(reset=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # -- thread plumbing ---------------------------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("TcpProxy is not started")
        return self._loop

    def _on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the proxy loop and return its result (thread-safe)."""
        if self._on_loop_thread():
            return fn()
        loop = self._require_loop()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def _call_async(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the proxy loop and wait for its result (not from the loop thread)."""
        loop = self._require_loop()
        if self._on_loop_thread():
            coro.close()
            raise RuntimeError("cannot wait for the proxy loop from its own thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)
