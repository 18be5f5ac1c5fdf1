"""The spec's usage snippets, as written, against the real broker.

The classes below are copied from ``messaging-README.md`` unchanged except for
imports and the ``load_config`` location; the test drives them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

# --- from the spec: "Recommended: Using BaseAgent" -----------------------------
from typing import Any, Dict, Type

import pika
import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool
from messaging.generated import messages_pb2
from tests.conftest import BROKER
from tests.integration.helpers import wait_for


class MyAgent(BaseAgent):
    def __init__(self, connection_pool: ConnectionPool):
        super().__init__(
            connection_pool=connection_pool,
            agent_name="my_agent",
            routing_keys=["my_agent.request"],
        )

    def get_routing_key_map(self) -> Dict[str, Type[ProtoMessage]]:
        return {
            "my_agent.request": messages_pb2.MyRequest,
        }

    def route_message(self, message, routing_key, properties):
        correlation_id = properties.get("correlation_id")
        if routing_key == "my_agent.request":
            self._handle_request(message, correlation_id)

    def _handle_request(self, message, correlation_id):
        # Process request
        response = messages_pb2.MyResponse()
        self.publish_response(response, "my_agent.response", correlation_id)


# --- end of the spec's code -----------------------------------------------------


@pytest.fixture
def spec_queues() -> Iterator[None]:
    yield
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    channel = connection.channel()
    for queue in ("my_agent", "my_agent.dlq", "spec.watcher", "spec.watcher.dlq"):
        channel.queue_delete(queue)
    connection.close()


def test_my_agent_snippet_answers_on_the_response_key(spec_queues: None) -> None:
    from messaging import EventSubscriber
    from messaging.config import load_config

    config = load_config()
    pool = ConnectionPool(config.rabbitmq)
    responses: list[dict[str, Any]] = []

    class Watcher(EventSubscriber):
        def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
            return messages_pb2.MyResponse

        def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
            responses.append(properties)

    watcher = Watcher(pool, "spec.watcher", routing_keys=["my_agent.response"])
    agent = MyAgent(pool)
    threads = [
        threading.Thread(target=watcher.start_consuming, daemon=True),
        threading.Thread(target=agent.start_consuming, daemon=True),
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: watcher.is_consuming and agent.is_consuming, what="both consumers")
    try:
        from messaging import EventPublisher

        publisher = EventPublisher(connection_pool=pool, agent_name="caller")
        publisher.publish(
            messages_pb2.MyRequest(text="hi"), "my_agent.request", correlation_id="spec-1"
        )
        wait_for(lambda: len(responses) == 1, what="the response")
        publisher.close()
    finally:
        agent.stop()
        watcher.stop()
        for thread in threads:
            thread.join(10)
        agent.close()
        pool.close()
    assert responses[0]["correlation_id"] == "spec-1"
    assert responses[0]["type"] == "chimera.v1.MyResponse"
