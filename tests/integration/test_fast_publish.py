"""The fast publish path (transport/amqp/fastpublish.py) against the real broker.

Many publishes in flight on one channel, some of them through aiormq's own
``basic_publish`` (interleaved by holding the channel's lock with direct
publishes): every confirm, return and nack reaches the publish it belongs to,
the broker stores every message once and in call order, and a channel or
connection closed under a waiting publish raises what it raised before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pika
import pytest
from pamqp import commands as spec

from messaging.aio import AsyncConnectionPool
from messaging.config import RabbitMQConfig
from messaging.errors import PublishError, PublishNackedError, UnroutableMessageError
from messaging.transport import ConnectionLost, Properties
from messaging.transport.amqp import fastpublish
from messaging.transport.amqp.channels import ManagedChannel
from tests.conftest import Names, RawBroker
from tests.faults.toolkit import broker as ctl
from tests.integration.helpers import wait_for

TIMEOUT = 30.0


class PathSpy:
    """Which publishes took the fast path (True) and which fell back (False)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: dict[str, bool] = {}
        send = fastpublish.ChannelWriter.send

        def spying(writer: fastpublish.ChannelWriter, *args: Any) -> Any:
            sent = send(writer, *args)
            self.taken[args[3].message_id] = sent is not None
            return sent

        monkeypatch.setattr(fastpublish.ChannelWriter, "send", spying)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> PathSpy:
    return PathSpy(monkeypatch)


@pytest.fixture
async def pool(config: RabbitMQConfig) -> AsyncIterator[AsyncConnectionPool]:
    pool = AsyncConnectionPool(config.model_copy(update={"connection_name": "fastpub-test"}))
    yield pool
    await pool.close()


def managed(pool: AsyncConnectionPool, purpose: str, confirms: bool = False) -> ManagedChannel:
    channel = pool.publishing.channel(purpose, confirms=confirms)
    assert isinstance(channel, ManagedChannel)
    return channel


def drain_queue(raw: RawBroker, queue: str) -> list[str]:
    ids: list[str] = []
    while (got := raw.get(queue)) is not None:
        props = got[1]
        assert isinstance(props, pika.BasicProperties)
        ids.append(str(props.message_id))
    return ids


async def publish(channel: ManagedChannel, queue: str, message_id: str, **kw: Any) -> None:
    await channel.publish(
        message_id.encode(),
        "",
        queue,
        Properties(message_id=message_id, delivery_mode=1, headers={"n": message_id}),
        mandatory=kw.get("mandatory", True),
        timeout=TIMEOUT,
    )


async def warmed_up(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, name: str
) -> tuple[str, ManagedChannel]:
    """A new queue, and a confirmed channel that has published "warm-up" to it
    (so the raw channel is open and the next publish may take the fast path)."""
    queue = names.queue(name)
    raw.channel.queue_declare(queue)
    channel = managed(pool, f"fastpub-{name}", confirms=True)
    await publish(channel, queue, "warm-up")
    return queue, channel


async def test_publishes_in_flight_with_slow_ones_interleaved_all_arrive_once_in_order(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    queue, channel = await warmed_up(pool, names, raw, "order")
    aiormq_channel: Any = await channel.raw()

    direct: list[str] = []

    async def publish_directly(count: int) -> None:
        # aiormq's own path on the same channel: holds its lock from queueing
        # to the socket write, so publishes started meanwhile fall back too.
        for j in range(count):
            message_id = f"direct-{j:04d}"
            direct.append(message_id)
            await aiormq_channel.basic_publish(
                message_id.encode(),
                routing_key=queue,
                properties=spec.Basic.Properties(message_id=message_id),
                mandatory=True,
                wait=j % 2 == 0,
            )
            await asyncio.sleep(0.02)

    ours = [f"bus-{i:04d}" for i in range(2000)]
    tasks: list[asyncio.Task[None]] = []
    # Both paths, whatever the machine's load: the first 50 start on an idle
    # channel (fast path); the next 50 while aiormq's lock is held (fallback).
    idle, locked = ours[:50], ours[50:100]
    await asyncio.gather(*(publish(channel, queue, m) for m in idle))
    async with aiormq_channel.lock:
        tasks += [asyncio.ensure_future(publish(channel, queue, m)) for m in locked]
        await asyncio.sleep(0.05)
    side = asyncio.ensure_future(publish_directly(30))
    for i, message_id in enumerate(ours[100:], start=100):
        tasks.append(asyncio.ensure_future(publish(channel, queue, message_id)))
        if i % 20 == 19:
            await asyncio.sleep(0.003)  # the writer takes a batch, the side goes on
    results = await asyncio.gather(*tasks, side, return_exceptions=True)
    assert [r for r in results if r is not None] == []

    assert all(spy.taken[m] for m in idle), "publishes on an idle channel fell back"
    assert not any(spy.taken[m] for m in locked), "publishes took the fast path past a held lock"

    arrived = drain_queue(raw, queue)
    assert arrived[0] == "warm-up"
    assert sorted(arrived[1:]) == sorted(ours + direct), "every message exactly once"
    # In call order: a publish that falls back makes the ones after it wait.
    assert [m for m in arrived if m.startswith("bus-")] == ours
    assert [m for m in arrived if m.startswith("direct-")] == direct


async def test_returns_reach_their_own_publish_among_many_in_flight(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    queue, channel = await warmed_up(pool, names, raw, "routed")
    targets = {f"m-{i:04d}": (queue if i % 3 else names.queue("nobody")) for i in range(600)}
    results = await asyncio.gather(
        *(publish(channel, target, m) for m, target in targets.items()), return_exceptions=True
    )
    for (message_id, target), result in zip(targets.items(), results, strict=True):
        if target == queue:
            assert result is None, (message_id, result)
        else:
            assert isinstance(result, UnroutableMessageError), (message_id, result)
    assert all(spy.taken.values())
    arrived = drain_queue(raw, queue)
    assert arrived == ["warm-up"] + [m for m, t in targets.items() if t == queue]


async def test_nacks_reach_their_own_publish_among_many_in_flight(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    """A queue that refuses publishes past its length: the first ``limit`` in wire
    order are stored and confirmed, every later one is nacked. A confirm mapped to
    the wrong publish would show as a nacked message in the queue or the reverse."""
    queue = names.queue("bounded")
    limit = 333
    raw.channel.queue_declare(
        queue, arguments={"x-max-length": limit, "x-overflow": "reject-publish"}
    )
    channel = managed(pool, "fastpub-nacks", confirms=True)
    ids = [f"m-{i:04d}" for i in range(1000)]
    results = await asyncio.gather(
        *(publish(channel, queue, m) for m in ids), return_exceptions=True
    )
    confirmed = [m for m, r in zip(ids, results, strict=True) if r is None]
    nacked = [m for m, r in zip(ids, results, strict=True) if isinstance(r, PublishNackedError)]
    assert len(confirmed) + len(nacked) == len(ids), [
        r for r in results if r is not None and not isinstance(r, PublishNackedError)
    ]
    assert any(spy.taken.values())
    assert drain_queue(raw, queue) == confirmed
    assert len(confirmed) == limit


async def test_a_publish_to_a_missing_exchange_raises_the_brokers_refusal_and_the_channel_heals(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    queue, channel = await warmed_up(pool, names, raw, "after")
    with pytest.raises(PublishError, match="does not exist"):
        await channel.publish(
            b"x",
            names.new_exchange("missing"),
            "any",
            Properties(message_id="lost"),
            mandatory=True,
            timeout=TIMEOUT,
        )
    assert spy.taken["lost"]
    await publish(channel, queue, "after")  # on the reopened channel
    assert drain_queue(raw, queue) == ["warm-up", "after"]


async def test_a_connection_closed_under_a_waiting_publish_raises_connection_lost(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    queue, channel = await warmed_up(pool, names, raw, "cut")
    aiormq_channel: Any = await channel.raw()

    async def no_confirms(frame: Any) -> None:
        return None  # the broker's ack never reaches the publish: it waits

    aiormq_channel._on_confirm_frame = no_confirms
    waiting = asyncio.ensure_future(publish(channel, queue, "cut-off"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert spy.taken["cut-off"]
    closed = await asyncio.to_thread(ctl.close_connections_matching, "fastpub-test:")
    assert closed >= 1
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(waiting, TIMEOUT)
    await publish(channel, queue, "again")  # after the reconnect
    assert drain_queue(raw, queue)[-1] == "again"


async def test_a_publish_past_its_deadline_times_out_and_a_late_confirm_is_ignored(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    queue, channel = await warmed_up(pool, names, raw, "late")
    aiormq_channel: Any = await channel.raw()
    held: list[Any] = []
    on_confirm = aiormq_channel._on_confirm_frame

    async def hold(frame: Any) -> None:
        held.append(frame)

    aiormq_channel._on_confirm_frame = hold
    with pytest.raises(TimeoutError):
        await channel.publish(
            b"x", "", queue, Properties(message_id="slow"), mandatory=True, timeout=0.3
        )
    assert spy.taken["slow"]
    assert aiormq_channel.message_id_delivery_tag.get("slow") is None
    aiormq_channel._on_confirm_frame = on_confirm
    for frame in held:
        await on_confirm(frame)  # aiormq drops the confirm of a cancelled publish
    assert not aiormq_channel.confirmations
    await publish(channel, queue, "next")
    assert drain_queue(raw, queue) == ["warm-up", "slow", "next"]


async def test_unconfirmed_channel_publishes_on_the_fast_path(
    pool: AsyncConnectionPool, names: Names, raw: RawBroker, spy: PathSpy
) -> None:
    queue = names.queue("replies")
    raw.channel.queue_declare(queue)
    channel = managed(pool, "fastpub-replies")
    ids = [f"r-{i:03d}" for i in range(300)]
    await asyncio.gather(*(publish(channel, queue, m, mandatory=False) for m in ids))
    assert all(spy.taken[m] for m in ids)
    wait_for(lambda: raw.depth(queue) == len(ids), what="the replies in the queue")
    assert drain_queue(raw, queue) == ids
