"""A connection that drops again while its channels are being restored.

The reconnect task restores every channel on the new connection (its
listeners). When that connection dies before a listener ran, the listener
must not wait for a reconnect, which is the very task running it: it fails,
and the reconnect goes round again. (Seen in tests/faults' proxy cuts, where
the proxy cuts the reconnected connection after a few hundred octets.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from messaging.aio import AsyncConnectionPool
from messaging.config import RabbitMQConfig
from messaging.transport import Properties
from messaging.transport.amqp.channels import ManagedChannel
from tests.conftest import Names, RawBroker
from tests.faults.toolkit import broker as ctl


@pytest.fixture
async def pool(config: RabbitMQConfig) -> AsyncIterator[AsyncConnectionPool]:
    pool = AsyncConnectionPool(config.model_copy(update={"connection_name": "relisten-test"}))
    yield pool
    await pool.close()


async def test_a_connection_lost_while_its_channels_are_restored_reconnects_again(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker
) -> None:
    queue = names.queue("relisten")
    raw.channel.queue_declare(queue)
    channels = [pool.publishing.channel(f"relisten-{i}", confirms=True) for i in range(2)]
    assert all(isinstance(c, ManagedChannel) for c in channels)
    first: Any = channels[0]
    supervised = first.connection
    props = Properties(message_id="before")
    await first.publish(b"1", "", queue, props, mandatory=True, timeout=10)

    killed: list[int] = []

    async def kill_the_new_connection_once() -> None:
        if killed:
            return
        killed.append(1)
        inner: Any = supervised._connection.transport.connection
        await inner.close(ConnectionError("dropped again during the restore"))

    # Runs first among the reconnect listeners, before the channels' restores.
    supervised._listeners.insert(0, kill_the_new_connection_once)
    closed = await asyncio.to_thread(ctl.close_connections_matching, "relisten-test:publish")
    assert closed == 1
    # Before the fix the reconnect task waited for itself here, for ever.
    deadline = asyncio.get_running_loop().time() + 20
    while not (supervised.health().reconnects >= 2 and supervised.is_connected):
        assert asyncio.get_running_loop().time() < deadline, supervised.health()
        await asyncio.sleep(0.05)
    assert killed
    props = Properties(message_id="after")
    await first.publish(b"2", "", queue, props, mandatory=True, timeout=20)
    assert raw.depth(queue) == 2
