"""Item 7: the health endpoint is bounded, quiet about hang-ups, and tells strangers nothing
about users or hosts."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from messaging import ConnectionPool
from messaging.config import RabbitMQConfig
from messaging.ops.health import HealthServer
from tests.integration.helpers import wait_for


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=1, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_half_sent_requests_hold_at_most_max_connections_threads_and_time_out(
    pool: ConnectionPool,
) -> None:
    server = HealthServer(pool, port=0, max_connections=8, request_timeout=3.0).start()
    clients: list[socket.socket] = []
    try:
        before = threading.active_count()
        for _ in range(200):
            client = socket.create_connection(("127.0.0.1", server.port))
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            clients.append(client)
        time.sleep(0.3)
        assert threading.active_count() - before <= 8
        # The ones over the cap were answered at once and closed (on a slow machine a
        # first slot may time out and free up while the 200 are still connecting).
        refused = 0
        for client in clients[8:]:
            client.settimeout(5)
            if client.recv(100).startswith(b"HTTP/1.0 503"):
                refused += 1
        assert refused >= 192 - 8
        # Every half-sent request is dropped after the request timeout; the server answers again.
        wait_for(lambda: threading.active_count() - before <= 1, timeout=10, what="timeouts")
        status, body = _get(f"{server.url}/healthz")
        assert status == 200
        assert json.loads(body)["status"] == "alive"
    finally:
        for client in clients:
            client.close()
        server.close()


def test_a_slow_drip_cannot_outlive_the_request_timeout(pool: ConnectionPool) -> None:
    server = HealthServer(pool, port=0, max_connections=4, request_timeout=1.0).start()
    client = socket.create_connection(("127.0.0.1", server.port))
    try:
        client.settimeout(10)
        started = time.monotonic()
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                client.send(bytes([byte]))
            except OSError:
                closed = True
                break
            client.setblocking(False)
            try:
                if client.recv(1) == b"":
                    closed = True
                    break
            except BlockingIOError:
                pass
            finally:
                client.setblocking(True)
                client.settimeout(10)
            time.sleep(0.1)  # each byte well within any per-read timeout
        assert closed, "the server kept a dripping client past its request timeout"
        assert time.monotonic() - started < 4
    finally:
        client.close()
        server.close()


def test_clients_that_hang_up_are_logged_at_debug_only(
    pool: ConnectionPool, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    server = HealthServer(pool, port=0, request_timeout=2.0).start()
    try:
        with caplog.at_level(logging.DEBUG, logger="messaging.health"):
            for path in ("/metrics", "/readyz", "/healthz") * 10:
                client = socket.create_connection(("127.0.0.1", server.port))
                client.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                # Close with a reset, as a client killed mid-request does.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            for _ in range(5):  # and some that connect and say nothing until the timeout
                socket.create_connection(("127.0.0.1", server.port)).close()
            assert _get(f"{server.url}/healthz")[0] == 200
            time.sleep(0.5)
    finally:
        server.close()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
    assert "Traceback" not in capsys.readouterr().err
    assert any(r.levelno == logging.DEBUG for r in caplog.records)


def test_readyz_names_no_user_and_no_host(config: RabbitMQConfig) -> None:
    """A pool that cannot log in: its error names the user and the host; /readyz must not."""
    user = "svc-user-7f3a"
    bad = config.model_copy(update={"username": user, "password": SecretStr("wrong")})
    pool = ConnectionPool(bad, max_retries=0, initial_retry_delay=0.1, max_retry_delay=0.1)
    server = HealthServer(pool, port=0, ready_cache_seconds=0.0).start()
    try:
        wait_for(lambda: pool.health().publishing.last_error is not None, what="the login to fail")
        status, body = _get(f"{server.url}/readyz")
        assert status == 503
        text = body.decode()
        report = json.loads(text)
        assert report["status"] == "not ready"
        assert "publish connection is down" in report["problems"]
        assert report["connections"]["publish"] == {"connected": False, "blocked": False}
        assert user not in text
        assert config.host not in text
        assert str(config.port) not in text
        # The details are still there for the process itself.
        assert user in (pool.health().publishing.last_error or "")
    finally:
        server.close()
        pool.close()
