"""A connection attempt that fails is closed there, not left to the garbage collector.

aio-pika's ``connect`` drops the connection object of a failed handshake
unclosed; its ``__del__`` schedules ``close()`` wherever the collector runs,
which logs "Task was destroyed but it is pending" or "coroutine was never
awaited" long afterwards (one per attempt while a broker is down), e.g. in
another test's log window.
"""

from __future__ import annotations

import asyncio
import gc
import socket

import pytest

from messaging.backoff import RetryPolicy
from messaging.config import RabbitMQConfig
from messaging.errors import ConnectionFailedError
from messaging.transport.amqp.connection import SupervisedConnection


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


async def _cut_after_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()  # a "broker" that hangs up mid-handshake


@pytest.mark.parametrize("peer", ["refused", "hangs up"])
async def test_failed_attempts_leave_no_connection_to_close_later(
    config: RabbitMQConfig, peer: str
) -> None:
    server = None
    if peer == "refused":
        port = _closed_port()
    else:
        server = await asyncio.start_server(_cut_after_accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    cfg = config.model_copy(update={"host": "127.0.0.1", "port": port, "connect_timeout": 2.0})
    connection = SupervisedConnection(cfg, RetryPolicy(max_retries=2, initial_delay=0.01), "leak")
    failed = False
    try:
        await connection.get()
    except ConnectionFailedError:
        failed = True  # leaving this block frees the error and every frame it held
    finally:
        if server is not None:
            server.close()
    assert failed
    gc.collect()  # what aio-pika's __del__ would schedule is scheduled now, on this loop
    closing = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").endswith("Connection.close")
    ]
    assert closing == [], "a failed attempt was left for the garbage collector to close"
