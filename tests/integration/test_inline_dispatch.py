"""Inline delivery dispatch: a plain callback runs on the channel's reader, no Task each.

The sync subscriber and the RPC reply consumer only queue a delivery or
complete a future; aiormq would otherwise start a Task per delivery for them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pika

from messaging.aio import AsyncConnectionPool
from messaging.config import RabbitMQConfig
from messaging.transport import Delivery
from messaging.transport.amqp.inline import InlineConsumer, dispatch_inline
from tests.conftest import Names, RawBroker

COUNT = 300


async def consume_all(
    config: RabbitMQConfig, queue: str, *, inline: bool
) -> tuple[list[int], set[int]]:
    """Consume COUNT messages; the bodies in arrival order and the ids of the running tasks."""
    pool = AsyncConnectionPool(config)
    bodies: list[int] = []
    running: list[object] = []  # held, so that no task id is reused
    done = asyncio.get_running_loop().create_future()

    def on_message(delivery: Delivery) -> None:
        bodies.append(int(delivery.body))
        running.append(asyncio.current_task())
        channel.ack(delivery.delivery_tag, delivery.generation)
        if len(bodies) == COUNT and not done.done():
            done.set_result(None)

    async def on_message_task(delivery: Delivery) -> None:
        on_message(delivery)

    try:
        channel = pool.consuming.channel("test-inline", prefetch=50)
        if inline:
            await channel.consume(queue, on_message, inline=True)
        else:
            await channel.consume(queue, on_message_task)
        await asyncio.wait_for(done, 30)
    finally:
        await pool.close()
    return bodies, {id(task) for task in running}


async def test_inline_callbacks_run_in_order_on_the_reader_without_a_task_each(
    config: RabbitMQConfig, names: Names, raw: RawBroker
) -> None:
    queue = names.queue("inline")
    raw.channel.queue_declare(queue, durable=True)
    for i in range(COUNT):
        raw.channel.basic_publish("", queue, str(i).encode(), pika.BasicProperties())

    bodies, tasks = await consume_all(config, queue, inline=True)

    assert bodies == list(range(COUNT)), "deliveries out of order or missing"
    assert len(tasks) == 1, f"{len(tasks)} tasks ran the callback; inline means the reader's one"
    assert raw.depth(queue) == 0


async def test_coroutine_callbacks_still_get_a_task_each(
    config: RabbitMQConfig, names: Names, raw: RawBroker
) -> None:
    """The control for the test above: the count of tasks does tell the two apart."""
    queue = names.queue("tasks")
    raw.channel.queue_declare(queue, durable=True)
    for i in range(COUNT):
        raw.channel.basic_publish("", queue, str(i).encode(), pika.BasicProperties())

    bodies, tasks = await consume_all(config, queue, inline=False)

    assert sorted(bodies) == list(range(COUNT))
    assert len(tasks) > COUNT // 2


def test_a_channel_aiormq_changed_under_us_falls_back_to_tasks() -> None:
    class NotAnAiormqChannel:
        def __init__(self) -> None:
            self.consumers: dict[str, Any] = {}

    assert dispatch_inline(NotAnAiormqChannel()) is False  # type: ignore[arg-type]
    seen: list[object] = []
    consumer = InlineConsumer(seen.append)
    asyncio.run(consumer(object()))  # type: ignore[arg-type]
    assert len(seen) == 1
