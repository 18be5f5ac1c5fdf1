"""The spec's usage snippets, as written, against the real broker.

The classes below are copied from ``messaging-README.md`` unchanged except for
imports and the ``load_config`` location; the test drives them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Dict, Type

import pika
import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool, EventSubscriber
from messaging.generated import messages_pb2
from tests.conftest import BROKER
from tests.integration.helpers import wait_for


# --- from the spec: "Recommended: Using BaseAgent" ---------------------------------
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
    for queue in (
        "my_agent",
        "my_agent.dlq",
        "spec.watcher",
        "spec.watcher.dlq",
        "my_agent_queue",
        "my_agent_queue.dlq",
        "my_agent.replies",
    ):
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


# --- from the spec: "Basic Subscriber" ---------------------------------------------
class MySubscriberAgent(EventSubscriber):
    def __init__(self, connection_pool: ConnectionPool):
        super().__init__(
            connection_pool=connection_pool, agent_name="my_agent", routing_keys=["query.request"]
        )

    def get_message_class(self, routing_key: str) -> Type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: Dict[str, Any]) -> None:
        print(f"Received: {message.query}")
        # Process message...
        received.append((message, properties))
        self.stop()  # (added: the test stops after one message)


# --- end of the spec's code -----------------------------------------------------------

received: list[tuple[ProtoMessage, dict[str, Any]]] = []


def basic_publisher_snippet() -> None:
    # --- from the spec: "Basic Publisher" (load_config from messaging.config) ------
    from messaging import ConnectionPool, EventPublisher, create_metadata
    from messaging.config import load_config
    from messaging.generated import messages_pb2

    # Load configuration
    config = load_config()

    # Create connection pool
    pool = ConnectionPool(config.rabbitmq)

    # Create publisher
    publisher = EventPublisher(
        connection_pool=pool, agent_name="my_agent", exchange_name="chimera.events"
    )

    # Create and publish message
    request = messages_pb2.QueryRequest()
    request.metadata.CopyFrom(create_metadata("my_agent"))
    request.query = "What is the ZEC price?"

    publisher.publish(request, routing_key="query.request")

    # Cleanup
    publisher.close()
    pool.close()
    # --- end of the spec's code -------------------------------------------------------


def test_basic_subscriber_and_publisher_snippets(spec_queues: None) -> None:
    from messaging.config import load_config

    config = load_config()
    received.clear()
    pool = ConnectionPool(config.rabbitmq)
    agent = MySubscriberAgent(pool)
    thread = threading.Thread(target=agent.start_consuming, daemon=True)  # Blocks until stopped
    thread.start()
    wait_for(lambda: agent.is_consuming, what="the subscriber")
    basic_publisher_snippet()
    thread.join(20)
    pool.close()
    assert not thread.is_alive()
    message, properties = received[0]
    assert message.query == "What is the ZEC price?"
    assert properties["correlation_id"] == message.metadata.correlation_id


def test_request_response_snippet(spec_queues: None) -> None:
    from messaging import EventPublisher
    from messaging.config import load_config

    config = load_config()
    pool = ConnectionPool(config.rabbitmq)
    # The reply queue of the snippet must exist for a mandatory publish to route.
    subscriber = EventSubscriberForOptions(pool)
    publisher = EventPublisher(connection_pool=pool, agent_name="my_agent")
    request = messages_pb2.QueryRequest(query="What is the ZEC price?")
    try:
        subscriber.declare()
        # --- from the spec: "Request-Response Pattern" ------------------------------
        # Publisher side
        publisher.publish_with_reply(
            message=request,
            routing_key="query.request",
            reply_queue="my_agent.replies",
            correlation_id="unique-id-123",
        )
        # --- end of the spec's code -------------------------------------------------
        seen = subscriber.take_one()
    finally:
        publisher.close()
        pool.close()
    assert seen["correlation_id"] == "unique-id-123"
    assert seen["reply_to"] == "my_agent.replies"


class EventSubscriberForOptions(EventSubscriber):
    """The spec's "Subscriber Options" example, as a concrete subclass."""

    def __init__(self, pool: ConnectionPool) -> None:
        # --- from the spec: "Subscriber Options" --------------------------------------
        super().__init__(
            connection_pool=pool,
            agent_name="my_agent",
            exchange_name="chimera.events",
            queue_name="my_agent_queue",  # Optional, defaults to agent_name
            routing_keys=["query.*"],  # Routing key patterns
            prefetch_count=1,  # QoS prefetch count
        )
        # --- end of the spec's code ---------------------------------------------------
        self.seen: list[dict[str, Any]] = []

    def declare(self) -> None:
        thread = threading.Thread(target=self.start_consuming, daemon=True)
        thread.start()
        wait_for(lambda: self.is_consuming, what="the subscriber")
        self._thread = thread

    def take_one(self) -> dict[str, Any]:
        wait_for(lambda: bool(self.seen), what="the request")
        self.stop()
        self._thread.join(20)
        return self.seen[0]

    def get_message_class(self, routing_key: str) -> Type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: Dict[str, Any]) -> None:
        self.seen.append(properties)
